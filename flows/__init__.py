"""The flows: each operation as a Prefect flow of tasks (flows/registry.py lists them).

A flow run an agent starts is a process of its own (``python -m prefect.engine``) that imports
this package first: it ends without the interpreter's final garbage collection, as the
``pgpitr`` command does (pgpitr/osutil.py).
"""

from pgpitr.osutil import no_collection_at_exit

no_collection_at_exit()
