# pgpitr: the two commands of the quick start are `make demo` and `make test`.
#
# Install layout: when run as root, the virtualenv lives in /opt/pgpitr/venv and is built on the
# system's /usr/bin/python3.11, because PostgreSQL runs as an unprivileged user that must be able
# to execute the WAL commands (root's own Python under /root is mode 700).  The package is
# installed (not linked to the checkout) for the same reason.  Chromium and its driver are for
# the browser test of the Prefect UI's run forms (tests/ui/).

PYTHON_SYSTEM ?= /usr/bin/python3.11
PG_BINDIR     ?= /usr/lib/postgresql/15/bin
ROOT          := $(filter 0,$(shell id -u))
VENV          ?= $(if $(ROOT),/opt/pgpitr/venv,$(CURDIR)/.venv)
PY            := $(VENV)/bin/python
SUDO          := $(if $(ROOT),,sudo)
UV            := python3 -m uv
# where `make install` links the pgpitr and prefect commands, so a plain shell finds them
BINDIR        ?= $(if $(ROOT),/usr/local/bin,$(HOME)/.local/bin)

.PHONY: all system venv install test test-matrix demo lint layout bench clean

all: install

system:
	@if [ ! -x $(PG_BINDIR)/postgres ] || [ ! -x $(PYTHON_SYSTEM) ] || ! command -v zstd >/dev/null \
	    || ! command -v systemd-analyze >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing PostgreSQL 15, Python 3.11 and Chromium from the distribution"; \
	  $(SUDO) mkdir -p /etc/postgresql-common; \
	  echo "create_main_cluster = false" | $(SUDO) tee /etc/postgresql-common/createcluster.conf >/dev/null; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    postgresql-15 postgresql-client-15 python3.11 python3.11-venv zstd tar systemd \
	    chromium chromium-driver >/dev/null; \
	fi
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv

venv: system
	@[ -x $(PY) ] || $(UV) venv -q --python $(PYTHON_SYSTEM) $(VENV)

# --compile-bytecode: the venv is root's and PostgreSQL's OS user cannot write bytecode into it
# (nor can anyone where PYTHONDONTWRITEBYTECODE is set): without it every command recompiles
# about 1,100 modules, 1.3-1.5 s of CPU each time.
install: venv
	$(UV) pip install -q --compile-bytecode --python $(PY) -c constraints.txt --reinstall-package pgpitr '.[kubernetes,test]'
	@mkdir -p $(BINDIR) && ln -sf $(VENV)/bin/pgpitr $(VENV)/bin/prefect $(BINDIR)/
	@# root's one step: the service account pgpitr runs as, its home, the API credentials
	@if [ -n "$(ROOT)" ]; then $(VENV)/bin/pgpitr install; fi
	@case ":$$PATH:" in *":$(BINDIR):"*) ;; *) echo "add $(BINDIR) to PATH to run pgpitr and prefect";; esac

# The version matrix: the whole suite runs on PostgreSQL 15 (Debian's); these run again on 17 and
# 18 (the test wheels, tests/pgwheels.py): what goes through each version's own tools (initdb,
# pg_basebackup, pg_waldump, recovery, timelines, pg_ctl), not the checks made before any of them.
MATRIX_TESTS ?= tests/test_walkthrough.py::test_walkthrough_restores_exactly_the_rows_committed_by_the_noted_time \
	tests/test_walkthrough.py::test_window_ends_at_a_wal_gap_and_restore_past_it_is_refused \
	tests/faults/test_archiving_faults.py::test_timelines_restore_of_a_restored_cluster

# Four workers (pytest-xdist), a test module each at a time (module fixtures stay whole): the
# suite waits on PostgreSQL, Prefect, fsync and its agents' polls far more than it computes; on
# 2 cores, two workers used about one core's worth of time (the CPU time of the run about its
# wall time); four fill those waits (a run under the same kind of load: 1,547 s -> 1,209 s).
TEST_WORKERS  ?= 4

# As root, the suite runs as pgpitr's service account, then the tests that start as root beside
# the version matrix (scripts/run_tests.sh, scripts/test_matrix.sh), all with a /tmp of their own
# in memory (scripts/private_tmp.sh).  First, at once: the layers' sizes and the engine's module
# limit.  --no-loadscope-reorder keeps the order the suite gives (tests/conftest.py: the longest
# modules first), which xdist would otherwise replace by the number of tests in a module.
test: install
	$(PY) scripts/layout.py
	bash scripts/private_tmp.sh sh -c 'PGPITR_TEST_PART=service bash scripts/run_tests.sh $(PY) \
	  -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 \
	  && WITH_ROOT_TESTS=1 bash scripts/test_matrix.sh $(PY) $(MATRIX_TESTS)'

test-matrix: install
	@bash scripts/test_matrix.sh $(PY) $(MATRIX_TESTS)

lint: install
	$(VENV)/bin/ruff check pgpitr cli tasks flows deployments tests bench scripts

layout:
	@python3 scripts/layout.py

demo: install
	PGPITR=$(VENV)/bin/pgpitr bash scripts/demo_flows.sh

bench: install
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf .venv build *.egg-info
