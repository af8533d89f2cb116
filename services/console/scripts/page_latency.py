"""Page latency of a running console, as an officer sees it: p50 and p95 of each main page over N requests.

    .venv/bin/python services/console/scripts/page_latency.py http://127.0.0.1:8004 [--requests 100] [--role admin]

Signs in through the dev sign-in form (a federation started by ``labornet up``), then asks each page in turn,
one request at a time, and prints a table. The figure in the console's README comes from this script.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import httpx

PAGES = ("/", "/vacancies", "/vacancies?q=厨师", "/transfers", "/cases", "/brands", "/demands", "/federation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("console", help="base URL of the console, e.g. http://127.0.0.1:8004")
    parser.add_argument("--requests", type=int, default=100, help="requests per page")
    parser.add_argument("--role", default="officer", choices=("officer", "admin"))
    args = parser.parse_args()
    with httpx.Client(base_url=args.console, timeout=30, follow_redirects=False) as client:
        form = client.get("/signin").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token, "no sign-in form: is this a console with dev sign-in?"
        signed = client.post("/signin", data={"csrf_token": token.group(1), "name": "latency", "role": args.role})
        assert signed.status_code == 303, signed.text
        every: list[float] = []
        print(f"{'page':<22} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for path in PAGES:
            times = []
            for _ in range(args.requests):
                started = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, f"{path}: HTTP {response.status_code}"
            every.extend(times)
            p95 = statistics.quantiles(times, n=20)[-1]
            print(f"{path:<22} {statistics.median(times):>8.1f} {p95:>8.1f} {max(times):>8.1f}")
        print(f"{'all pages':<22} {statistics.median(every):>8.1f} {statistics.quantiles(every, n=20)[-1]:>8.1f}")


if __name__ == "__main__":
    main()
