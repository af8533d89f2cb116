"""LaborNet rights service.

Migrant-worker rights cases (wage arrears first): filing, referral, handling, resolution.
"""

__version__ = "0.1.0"
