import sys

if sys.argv[1:2] == ["describe-scale"]:  # python -m bench describe-scale [file|s3] [COUNT…]
    from bench import describe_scale

    describe_scale.cli(sys.argv[2:])
    raise SystemExit(0)

from bench.cli import main  # noqa: E402

raise SystemExit(main())
