import sys

if sys.argv[1:2] == ["describe-scale"]:  # python -m bench describe-scale [COUNTS…]
    from bench import describe_scale

    describe_scale.main(tuple(int(a) for a in sys.argv[2:]) or describe_scale.COUNTS)
    raise SystemExit(0)

from bench.cli import main  # noqa: E402

raise SystemExit(main())
