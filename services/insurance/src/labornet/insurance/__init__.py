"""LaborNet insurance service.

Insured-person records and the cross-province unemployment-insurance transfer saga.
"""

__version__ = "0.1.0"
