import sys

if sys.argv[1:2] == ["encryption"]:  # python -m bench encryption [SCALE [SEGMENTS]]
    from bench.encryption import cli

    raise SystemExit(cli(sys.argv[2:]))

if sys.argv[1:2] == ["rpo"]:  # python -m bench rpo: the RPO bench (bench/rpo.py), no peers
    from bench.rpo import cli as rpo

    raise SystemExit(rpo(sys.argv[2:]))

if sys.argv[1:2] == ["fleet"]:  # python -m bench fleet [COUNT]: clusters on one host's agent
    from bench.fleet import cli as fleet

    raise SystemExit(fleet(sys.argv[2:]))

if sys.argv[1:2] == ["commands"]:  # python -m bench commands [RUNS]: a command's wait
    from bench.commands import cli as commands

    raise SystemExit(commands(sys.argv[2:]))

if sys.argv[1:2] == ["describe-scale"]:  # python -m bench describe-scale [file|s3] [COUNT…]
    from bench import describe_scale

    describe_scale.cli(sys.argv[2:])
    raise SystemExit(0)

from bench.cli import main  # noqa: E402

raise SystemExit(main())
