# Two entry points (see README): `make demo` and `make test`. Everything installs from uv.lock.
PYTHON ?= python3
VENV   := .venv
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
STAMP  := $(VENV)/.synced
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo test bench bench-detect bench-dask bench-region bench-publish torture install clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"

# bytecode compiled at install: every command starts from .pyc, also where PYTHONDONTWRITEBYTECODE is set
$(STAMP): $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --quiet --compile-bytecode --python $(PYTHON)
	$(VENV)/bin/python -m compileall -q vigila flows connectors schemas
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vigila demo --warehouse warehouse

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)   # the headline: whole commands beside same-run yardsticks; then the ingest kernel table
	$(VENV)/bin/python benchmarks/bench_commands.py
	$(VENV)/bin/python benchmarks/bench_ingest.py

bench-detect: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_detect.py

bench-dask: $(STAMP)   # 1 vs 2 Dask worker processes (scheduler + workers started here), then the region projection
	$(VENV)/bin/python benchmarks/bench_dask.py

bench-region: $(STAMP)   # the region load (300 k series x 520 weeks, 50 sources) on scheduler + 2 workers; --sample N to run N blocks
	$(VENV)/bin/python benchmarks/bench_region.py

bench-publish: $(STAMP)   # peak memory of the streaming alerts publish vs the whole-frame one (20 M staged rows)
	$(VENV)/bin/python benchmarks/bench_publish_blocks.py

torture: $(STAMP)
	$(VENV)/bin/python benchmarks/torture.py

clean:
	rm -rf $(VENV) $(TOOLS) warehouse
