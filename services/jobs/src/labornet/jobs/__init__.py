"""LaborNet jobs service.

Vacancies shared across the federation, federated search and precise push to subscribed workers.
"""

__version__ = "0.1.0"
