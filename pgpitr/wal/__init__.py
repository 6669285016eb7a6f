"""The WAL path: archive (push and fetch), the per-segment commands PostgreSQL runs, the spool that
batches pushes, and the streamer.

Imported by the per-segment commands: nothing here may import Prefect, typer or rich, and boto3
only when a repository is S3.
"""
