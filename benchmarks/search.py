"""Search benchmark: vacancy search latency on the replica of all nine provinces, on SQLite and PostgreSQL.

For each size a fresh database is migrated to head and bulk-loaded with synthetic vacancies (real job titles in
Chinese and English, real prefectures of the nine member provinces, ISCO-08 occupations, salaries 3000-20000 CNY,
80% open, posted over 180 days), analysed, and then queried through ``search_vacancies`` — the code the API uses —
with a mix of filtered text queries, a filter-only query and a deep page reached by cursor. Each timing covers
the page and its total (both statements).

    python -m benchmarks search --sizes 100000 --queries 50           # SQLite only
    LABORNET_BENCH_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test python -m benchmarks search
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.jobs.adapters.search import SearchParams, search_vacancies
from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.domain.text import document
from labornet.shared.db import create_engine, readonly_sessionmaker, sessionmaker
from labornet.shared.migrations import upgrade
from labornet.shared.testing import create_postgres_database, drop_postgres_database

# (Chinese title, English title, ISCO-08 unit group, typical skills)
JOBS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("川菜厨师", "Sichuan chef", "5120", ("健康证", "川菜")),
    ("粤菜厨师", "Cantonese chef", "5120", ("健康证", "粤菜")),
    ("中餐厨师", "Chinese cuisine chef", "5120", ("健康证", "炒锅")),
    ("西餐厨师", "Western cuisine chef", "5120", ("健康证", "西餐")),
    ("火锅店厨师", "Hotpot chef", "5120", ("健康证",)),
    ("行政总厨", "Executive chef", "3434", ("厨房管理", "成本控制")),
    ("面点师", "Pastry cook", "7512", ("健康证", "面点")),
    ("厨房帮工", "Kitchen helper", "9412", ("健康证",)),
    ("餐厅服务员", "Restaurant waiter", "5131", ("健康证", "普通话")),
    ("焊工", "Welder", "7212", ("焊工证",)),
    ("电焊工", "Electric welder", "7212", ("焊工证", "二氧化碳保护焊")),
    ("氩弧焊工", "TIG welder", "7212", ("焊工证", "氩弧焊")),
    ("电工", "Electrician", "7411", ("电工证",)),
    ("维修电工", "Maintenance electrician", "7411", ("电工证", "PLC")),
    ("水电工", "Plumber and electrician", "7126", ("电工证",)),
    ("管道工", "Plumber", "7126", ("管道安装",)),
    ("保安", "Security guard", "5414", ("保安员证",)),
    ("保安员", "Security officer", "5414", ("保安员证", "消防")),
    ("家政服务员", "Housekeeper", "9111", ("家政", "烹饪")),
    ("保洁员", "Cleaner", "9112", ("保洁",)),
    ("育婴员", "Childcare worker", "5311", ("育婴员证",)),
    ("月嫂", "Maternity nurse", "5311", ("母婴护理",)),
    ("养老护理员", "Elderly care assistant", "5321", ("养老护理员证",)),
    ("护理员", "Care assistant", "5321", ("护理",)),
    ("居家护理员", "Home care worker", "5322", ("护理", "烹饪")),
    ("护士", "Nurse", "2221", ("护士执业证书",)),
    ("货车司机", "Truck driver", "8332", ("A2驾照",)),
    ("网约车司机", "Ride-hailing driver", "8322", ("C1驾照",)),
    ("小车司机", "Car driver", "8322", ("C1驾照",)),
    ("叉车司机", "Forklift driver", "8343", ("叉车证",)),
    ("塔吊司机", "Tower crane operator", "8343", ("塔式起重机操作证",)),
    ("起重机操作工", "Crane operator", "8343", ("起重机操作证",)),
    ("快递员", "Courier", "9621", ("电动车",)),
    ("外卖骑手", "Food delivery rider", "9621", ("电动车", "智能手机")),
    ("装卸工", "Loader", "9333", ()),
    ("仓库搬运工", "Warehouse porter", "9333", ()),
    ("建筑工人", "Construction labourer", "9313", ()),
    ("砌筑工", "Bricklayer", "7112", ("砌筑",)),
    ("钢筋工", "Steel fixer", "7114", ("钢筋",)),
    ("混凝土工", "Concrete worker", "7114", ()),
    ("木工", "Carpenter", "7115", ("木工",)),
    ("汽车维修工", "Car mechanic", "7231", ("汽车维修",)),
    ("机械装配工", "Mechanical assembler", "8211", ("看图纸",)),
    ("电子设备装配工", "Electronics assembler", "8212", ("焊锡",)),
    ("普工", "General worker", "9329", ()),
    ("流水线操作工", "Assembly line worker", "9329", ()),
    ("缝纫工", "Sewing machine operator", "8153", ("平车",)),
    ("裁缝", "Tailor", "7531", ("裁剪",)),
    ("刺绣工", "Embroiderer", "7533", ("蜀绣",)),
    ("食品加工操作工", "Food processing operator", "8160", ("健康证",)),
    ("营业员", "Shop assistant", "5223", ("普通话",)),
    ("收银员", "Cashier", "5223", ("收银",)),
    ("美发师", "Hairdresser", "5141", ("美发",)),
    ("客服专员", "Customer service agent", "4222", ("普通话", "Excel")),
    ("综合办事员", "Office clerk", "4110", ("Word", "Excel")),
    ("软件开发工程师", "Software developer", "2512", ("Python", "Java")),
    ("网络运维技术员", "IT support technician", "3512", ("Linux",)),
    ("酒店经理", "Hotel manager", "1411", ("酒店管理",)),
    ("茶叶种植工", "Tea grower", "6112", ("茶园管理",)),
    ("蔬菜种植工", "Vegetable grower", "6111", ()),
    ("养殖工", "Livestock breeder", "6121", ("养殖",)),
    ("农业工人", "Farm labourer", "9211", ()),
    ("评茶员", "Tea taster", "7515", ("评茶员证",)),
)
# replicas hold every member's vacancies; the big labour markets post more
PROVINCE_WEIGHTS = {
    "510000": 18,
    "330000": 16,
    "320000": 16,
    "350000": 12,
    "500000": 12,
    "530000": 9,
    "520000": 8,
    "640000": 4,
    "540000": 5,
}
COUNTIES = {
    "510100": ("510104", "510105", "510107", "510116", "510181"),
    "500100": ("500103", "500105", "500112"),
    "330100": ("330106", "330110"),
    "330700": ("330782",),
    "320500": ("320506", "320583"),
    "350200": ("350203", "350206"),
    "530100": ("530102", "530103"),
    "520100": ("520102", "520103"),
    "640100": ("640104",),
    "540100": ("540102",),
}
EMPLOYER_WORDS = ("鑫源", "宏达", "华信", "德胜", "恒通", "蜀香", "天成", "瑞丰", "金桥", "永安", "众诚", "兴旺")
EMPLOYER_KINDS = ("餐饮", "建筑工程", "物业管理", "家政服务", "物流", "机械制造", "电子科技", "人力资源", "农业开发")
BENEFITS = ("包吃包住", "五险一金", "提供宿舍", "交通补贴", "年终奖", "节日福利", "带薪年假", "加班费另计")
SCHEDULES = ("做六休一", "八小时工作制", "两班倒", "长白班", "做五休二", "月休四天")
REQUIREMENTS = ("有相关工作经验者优先", "持证上岗", "无经验可培训", "吃苦耐劳，服从安排", "身体健康", "责任心强")
STATUSES = ("open",) * 16 + ("filled", "filled", "expired", "withdrawn")
EMPLOYMENT = ("full-time",) * 20 + ("part-time", "part-time", "seasonal", "seasonal", "internship")
TARGET_GROUPS = (
    ("migrant-workers", 0.5),
    ("college-graduates", 0.15),
    ("lifted-out-of-poverty", 0.1),
    ("veterans", 0.05),
    ("people-with-disabilities", 0.03),
    ("returning-entrepreneurs", 0.02),
)
COLUMNS = tuple(c.name for c in vacancy.columns)


def prefectures() -> dict[str, dict[str, str]]:
    """The member provinces' prefectures (code → name), from the federation's division file."""
    document = json.loads(files("labornet.shared").joinpath("data/divisions.json").read_text("utf-8"))
    return {p: document["divisions"][p] for p in PROVINCE_WEIGHTS}


def synthetic_vacancies(count: int, seed: int, now: datetime) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    provinces = list(PROVINCE_WEIGHTS)
    places = {p: list(names.items()) for p, names in prefectures().items()}
    for _ in range(count):
        province = rng.choices(provinces, weights=list(PROVINCE_WEIGHTS.values()))[0]
        prefecture, city = rng.choice(places[province])
        counties = COUNTIES.get(prefecture)
        division = rng.choice(counties) if counties and rng.random() < 0.5 else prefecture
        zh, en, occupation, skills = rng.choice(JOBS)
        salary_min = rng.randrange(3000, 15001, 500)
        salary_max = min(20000, salary_min + rng.randrange(1000, 5001, 500))
        employer = f"{city.removesuffix('市')}{rng.choice(EMPLOYER_WORDS)}{rng.choice(EMPLOYER_KINDS)}有限公司"
        title = f"{zh} {en}" if rng.random() < 0.5 else zh
        description = (
            f"招聘{zh}{rng.randint(1, 30)}名，{rng.randint(40, 55)}岁以下，{rng.choice(REQUIREMENTS)}。"
            f"月薪{salary_min}-{salary_max}元，{'，'.join(rng.sample(BENEFITS, 3))}，{rng.choice(SCHEDULES)}。"
            f"工作地点：{city}。"
        )
        posted_at = now - timedelta(seconds=rng.uniform(0, 180 * 86400))
        row: dict[str, Any] = {
            "id": f"{province}-V-{rng.getrandbits(80):020X}",
            "owner_province": province,
            "employer_name": employer,
            "employer_credit_code": f"91{prefecture}MA{rng.getrandbits(32):08X}",
            "title": title,
            "description": description,
            "occupation_code": occupation,
            "occupation_name": zh,
            "division_code": division,
            "city": city,
            "headcount": rng.randint(1, 30),
            "hired": 0,
            "salary_min": salary_min,
            "salary_max": salary_max,
            "employment_type": rng.choice(EMPLOYMENT),
            "target_groups": [group for group, share in TARGET_GROUPS if rng.random() < share],
            "skills": list(skills),
            "brand_id": None,
            "contact": f"1{rng.randint(3, 9)}{rng.randint(0, 999_999_999):09d}",
            "posted_at": posted_at,
            "closing_date": (posted_at + timedelta(days=rng.randint(30, 180))).date(),
            "status": rng.choice(STATUSES),
            "version": 1,
            "updated_at": posted_at,
        }
        row["search_tokens"] = document([title, description, employer, zh, city, " ".join(skills)])
        yield row


def batches(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _as_datetime(value: Any) -> datetime:
    """The newest posting of a reused database, as the aware ``now`` its query kinds are relative to."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).replace(microsecond=0)


def _copy_value(value: Any) -> Any:
    """COPY takes the JSON columns as JSON text."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list) else value


async def load_postgresql(url: str, rows: Iterator[dict[str, Any]]) -> None:
    """COPY in batches (the generated search_vector and every index are computed by the server)."""
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        for batch in batches(rows, 20_000):
            records = [tuple(_copy_value(r[c]) for c in COLUMNS) for r in batch]
            await connection.copy_records_to_table("vacancy", records=records, columns=list(COLUMNS))
        await connection.execute("VACUUM ANALYZE vacancy")
    finally:
        await connection.close()


async def load_sqlite(engine: AsyncEngine, rows: Iterator[dict[str, Any]]) -> None:
    """Multi-row inserts in big transactions (the FTS5 triggers index every row)."""
    for batch in batches(rows, 20_000):
        async with sessionmaker(engine)() as session, session.begin():
            await session.execute(insert(vacancy), batch)
    async with engine.begin() as connection:
        await connection.execute(text("ANALYZE"))


QueryFactory = Callable[[random.Random], Awaitable[SearchParams]]


def query_kinds(engine: AsyncEngine, now: datetime) -> dict[str, QueryFactory]:
    provinces = list(PROVINCE_WEIGHTS)
    codes = [code for names in prefectures().values() for code in names]
    words = ("厨师", "司机", "保安", "家政", "焊工", "电工", "服务员", "普工", "护理员", "装配工")

    async def text_and_province(rng: random.Random) -> SearchParams:
        return SearchParams(q=rng.choice(words), province=rng.choice(provinces))

    async def english_and_salary(rng: random.Random) -> SearchParams:
        low = rng.randrange(4000, 12001, 1000)
        return SearchParams(
            q=rng.choice(("chef", "welder", "driver", "cleaner")), salary_min=low, salary_max=low + 2000
        )

    async def text_division_by_salary(rng: random.Random) -> SearchParams:
        return SearchParams(q=rng.choice(("焊工", "厨师", "司机")), division_code=rng.choice(codes), sort="salary")

    async def text_many_filters(rng: random.Random) -> SearchParams:
        return SearchParams(
            q=rng.choice(words),
            province=rng.choice(provinces),
            target_group="migrant-workers",
            employment_type="full-time",
            posted_since=now - timedelta(days=30),
        )

    async def text_only(rng: random.Random) -> SearchParams:
        return SearchParams(q=rng.choice(("厨师", "司机", "焊工 welder", "川菜厨师")))

    async def occupation_only(rng: random.Random) -> SearchParams:
        return SearchParams(occupation_code=rng.choice(("5", "51", "7212", "83", "9")), province=rng.choice(provinces))

    async def single_character(rng: random.Random) -> SearchParams:
        return SearchParams(q=rng.choice(("厨", "焊", "司")), province=rng.choice(provinces))

    async def deep_page(rng: random.Random) -> SearchParams:
        """Page 11 of a text query in a province, reached by following cursors (not timed)."""
        params = SearchParams(q=rng.choice(words[:6]), province=rng.choice(provinces[:5]))
        async with readonly_sessionmaker(engine)() as session:
            for _ in range(10):
                page = await search_vacancies(session, params)
                if page.next_cursor is None:
                    break
                params = SearchParams(q=params.q, province=params.province, cursor=page.next_cursor)
        return params

    return {
        "text+province": text_and_province,
        "english+salary": english_and_salary,
        "text+division, by salary": text_division_by_salary,
        "text+5 filters": text_many_filters,
        "text only": text_only,
        "occupation+province": occupation_only,
        "deep page 11": deep_page,
        "single character": single_character,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(engine: AsyncEngine, now: datetime, queries: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    sessions = readonly_sessionmaker(engine)
    results: dict[str, Any] = {}
    for kind, make in query_kinds(engine, now).items():
        count = queries
        timings: list[float] = []
        matches: list[int] = []
        for n in range(count + 3):  # the first three warm the caches and are not counted
            params = await make(rng)
            async with sessions() as session:
                started = time.perf_counter()
                page = await search_vacancies(session, params)
                elapsed = (time.perf_counter() - started) * 1000
            if n >= 3:
                timings.append(elapsed)
                matches.append(page.total)
        results[kind] = {
            "queries": count,
            "p50_ms": round(percentile(timings, 0.50), 1),
            "p95_ms": round(percentile(timings, 0.95), 1),
            "max_ms": round(max(timings), 1),
            "median_total": int(statistics.median(matches)),
        }
    return results


async def run(
    backend: str, size: int, queries: int, base_url: str | None, keep: bool = False, reuse: str | None = None
) -> dict[str, Any]:
    """Load ``size`` vacancies into a new database and time the query kinds on it.

    ``keep`` leaves the database in place and prints its URL; ``reuse`` (such a URL) skips the load and times the
    query kinds on what it holds, so that a change to the search can be measured again in minutes, not a load.
    """
    now = datetime.now(UTC).replace(microsecond=0)
    directory = Path(tempfile.mkdtemp(prefix="labornet-search-bench-"))
    name = None
    if reuse is not None:
        url = reuse
    elif backend == "postgresql":
        assert base_url is not None
        url, name = await create_postgres_database(base_url)
    else:
        url = f"sqlite+aiosqlite:///{directory / 'jobs.sqlite3'}"
    engine = create_engine(url)
    load_s = None
    try:
        if reuse is None:
            await upgrade(engine, "labornet.jobs:migrations")
            rows = synthetic_vacancies(size, seed=size, now=now)
            started = time.perf_counter()
            if backend == "postgresql":
                await load_postgresql(url, rows)
            else:
                await load_sqlite(engine, rows)
            load_s = time.perf_counter() - started
        else:
            async with engine.connect() as connection:
                size = int((await connection.execute(text("SELECT count(*) FROM vacancy"))).scalar_one())
                newest = (await connection.execute(text("SELECT max(posted_at) FROM vacancy"))).scalar_one()
            now = _as_datetime(newest)
        if keep:
            print(f"kept: {url}", flush=True)
        async with engine.connect() as connection:
            if backend == "postgresql":
                size_sql = "SELECT pg_database_size(current_database())"
            else:
                size_sql = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
            database_mb = int((await connection.execute(text(size_sql))).scalar_one()) / 1e6
        latency = await measure(engine, now, queries, seed=7)
    finally:
        await engine.dispose()
        if name is not None and base_url is not None and not keep:
            await drop_postgres_database(base_url, name)
    return {
        "backend": backend,
        "vacancies": size,
        "load_s": None if load_s is None else round(load_s, 1),
        "rows_per_s": None if load_s is None else round(size / load_s),
        "database_mb": round(database_mb),
        "latency": latency,
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated numbers of vacancies")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per kind")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--keep", action="store_true", help="leave the loaded databases in place; print their URLs")
    parser.add_argument("--reuse", help="URL of a database an earlier --keep loaded: time the queries, load nothing")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    base_url = os.environ.get("LABORNET_BENCH_POSTGRES_URL") or None
    if base_url is None and "postgresql" in backends:
        print("LABORNET_BENCH_POSTGRES_URL is not set: running SQLite only", flush=True)
        backends = [b for b in backends if b != "postgresql"]
    results = []
    for size in sizes:
        for backend in backends:
            result = asyncio.run(run(backend, size, args.queries, base_url, keep=args.keep, reuse=args.reuse))
            print(json.dumps(result, ensure_ascii=False), flush=True)
            results.append(result)
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
