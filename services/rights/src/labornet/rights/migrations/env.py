from labornet.rights.adapters.tables import metadata
from labornet.shared.db import platform_metadata
from labornet.shared.migrations import run_env

run_env([platform_metadata, metadata])
