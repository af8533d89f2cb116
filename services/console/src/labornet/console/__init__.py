"""LaborNet officer console.

The case handler's workbench of one province node, in the browser: today's work across the node's four services,
vacancies, transfers, rights cases, brands and the federation's state, through the services' public APIs only.
"""

__version__ = "0.1.0"
