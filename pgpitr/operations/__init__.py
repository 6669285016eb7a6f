"""The operations: each module is one, with its entry point ``run(steps, ...)`` that puts the
operation's steps in order, once, and the steps themselves (plain functions a flow runs as tasks).
"""
