"""LaborNet brands service.

The labour-service brand registry (劳务品牌) and partner demand for a brand's workers.
"""

__version__ = "0.1.0"
