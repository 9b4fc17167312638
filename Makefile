# elevflyt — set-up on a fresh machine is two commands:
#   make run    builds, then runs both sample pipelines into ./lakehouse
#   make test   unit + integration tests, then the independent readers (Python deltalake, polars, DuckDB)
#
# CARGO_TARGET_DIR may point at a persistent build directory (CI uses one to save a cold build).

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/debug/elevflyt

.PHONY: all build run test test-structure test-rust test-readers test-sharing test-storage venv chromium openssl interop bench docs fmt lint clean compare

all: build

build:
	$(CARGO) build --locked

# The sample tells its story one delivery at a time: each pipeline's first snapshot, then the
# next (so history, time travel and the Change Data Feed have versions to show).
run: build
	$(BIN) run pipelines/bergen.toml --until 2026-01-15
	$(BIN) run pipelines/bergen.toml
	$(BIN) run pipelines/voss.toml --until 2026-11-01
	$(BIN) run pipelines/voss.toml
	@echo
	@echo "Tables written under ./lakehouse. Try:"
	@echo "  $(BIN) sql pipelines/bergen.toml \"SELECT skolenummer, klasse, count(*) AS elevar FROM elevforhold WHERE is_current GROUP BY 1, 2 ORDER BY 1, 2\""

test: test-structure test-rust test-readers test-sharing test-storage

# The module map has no cycles (docs/ARCHITECTURE.md, "Module map"); -v prints it.
test-structure:
	$(PYTHON) scripts/module_cycles.py

test-rust:
	$(CARGO) test --locked --all-targets

$(VENV)/.installed: tests/readers/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/readers/requirements.txt
	touch $@

venv: $(VENV)/.installed

# Headless Chromium renders the HTML report in the reader tests (Debian package).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test-readers: build venv chromium
	ELEVFLYT_BIN=$(abspath $(BIN)) $(VENV)/bin/python -m pytest -q -s tests/readers

# The county's side of `elevflyt serve`: the official Delta Sharing client (delta-sharing 1.4.2,
# which pins pandas<3 and pyarrow<=23.0.1) in a virtual environment of its own, over HTTP and TLS
# (a certificate made by openssl in the test).
SHARING_VENV := .venv-sharing

$(SHARING_VENV)/.installed: tests/sharing/requirements.txt
	$(PYTHON) -m venv $(SHARING_VENV)
	$(SHARING_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/sharing/requirements.txt
	touch $@

openssl:
	@command -v openssl >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl; }

# The operator pages in a real browser: Playwright (in .venv-sharing) drives Debian's Chromium,
# axe-core (npm, tests/ui) checks accessibility; screenshots go to target/screenshots.
tests/ui/node_modules/.installed: tests/ui/package.json tests/ui/package-lock.json
	cd tests/ui && npm ci --silent --no-audit --no-fund
	touch $@

test-sharing: build $(SHARING_VENV)/.installed openssl chromium tests/ui/node_modules/.installed
	NO_PROXY=127.0.0.1,localhost ELEVFLYT_BIN=$(abspath $(BIN)) $(SHARING_VENV)/bin/python -m pytest -q -s tests/sharing

# Object storage for real: the Bergen pipeline on moto's S3 server and on Azurite (npm,
# tests/storage), both started by the test on 127.0.0.1; deltalake reads the tables there.
tests/storage/node_modules/.installed: tests/storage/package.json tests/storage/package-lock.json
	cd tests/storage && npm ci --silent --no-audit --no-fund
	touch $@

test-storage: build $(SHARING_VENV)/.installed tests/storage/node_modules/.installed
	NO_PROXY=127.0.0.1,localhost ELEVFLYT_BIN=$(abspath $(BIN)) $(SHARING_VENV)/bin/python -m pytest -q -s tests/storage

# Apache Spark + delta-spark (the reference implementation) reads every table and must see what
# elevflyt returns. Needs Java 17 and Maven (Maven Central) for the delta-spark jars.
SPARK_VENV := .venv-spark
DELTA_JARS := interop/target/jars

$(SPARK_VENV)/.installed: interop/requirements.txt
	$(PYTHON) -m venv $(SPARK_VENV)
	$(SPARK_VENV)/bin/pip install --quiet --disable-pip-version-check -r interop/requirements.txt
	touch $@

$(DELTA_JARS)/.resolved: interop/pom.xml
	cd interop && mvn --batch-mode --quiet dependency:copy-dependencies -DincludeScope=runtime \
	  -DincludeArtifactIds=delta-spark_2.13,delta-storage -DoutputDirectory=target/jars
	touch $@

interop: build $(SPARK_VENV)/.installed $(DELTA_JARS)/.resolved
	ELEVFLYT_BIN=$(abspath $(BIN)) DELTA_JARS=$(abspath $(DELTA_JARS)) $(SPARK_VENV)/bin/python -m pytest -q -s interop

# Performance: a release build beside a Python polars + deltalake SCD2 and a PySpark + delta-spark
# MERGE INTO on the same generated data, with elevflyt's cost curves over BENCH_SIZES and the
# churns of BENCH_CHURNS (data cached in bench/data); then a FINT pull, the national fleet and a
# month of daily snapshots.
RELEASE_DIR := $(or $(CARGO_TARGET_DIR),target)
BENCH_SIZES ?= 100000 300000 1000000 3000000
# The Spark peer (PySpark + delta-spark, MERGE INTO) up to this size.
SPARK_MAX ?= 1000000
# The FINT pull from the local test server (tests/servers/api_server.py).
FINT_PUPILS ?= 100000
# The national fleet: one pipeline per kommune.
FLEET_PUPILS ?= 630000
# A month of daily snapshots into one warehouse: the last day against the first next day.
DAILY_PUPILS ?= 100000
DAILY_DAYS ?= 30

bench: venv $(SPARK_VENV)/.installed $(DELTA_JARS)/.resolved
	$(CARGO) build --locked --release
	SPARK_PY=$(abspath $(SPARK_VENV))/bin/python DELTA_JARS=$(abspath $(DELTA_JARS)) SPARK_MAX=$(SPARK_MAX) \
	  $(VENV)/bin/python bench/bench.py $(abspath $(RELEASE_DIR))/release/elevflyt $(abspath $(VENV))/bin/python $(BENCH_SIZES)
	$(PYTHON) bench/fint_pull.py $(abspath $(RELEASE_DIR))/release/elevflyt $(FINT_PUPILS)
	$(VENV)/bin/python bench/fleet.py $(abspath $(RELEASE_DIR))/release/elevflyt $(FLEET_PUPILS)
	$(PYTHON) bench/daily.py $(abspath $(RELEASE_DIR))/release/elevflyt $(DAILY_PUPILS) $(DAILY_DAYS)

# Regenerate the table reference in README.md from the schema definitions in src/schema.rs.
docs: build
	$(BIN) schema-docs > .tables.md
	$(PYTHON) -c "import re,sys; r=open('README.md').read(); t=open('.tables.md').read(); \
	open('README.md','w').write(re.sub(r'(<!-- tables:begin -->).*?(<!-- tables:end -->)', lambda m: m.group(1)+'\n'+t.strip()+'\n'+m.group(2), r, flags=re.S))"
	rm -f .tables.md

# What a change does to the tables: the sample pipelines run day by day with BASE (a binary
# built from another commit) and with this build, every version of every table compared.
compare: build venv
	@test -n "$(BASE)" || { echo "usage: make compare BASE=/path/to/other/elevflyt"; exit 2; }
	$(VENV)/bin/python scripts/table_fingerprint.py $(BASE) > .fingerprint-base.txt
	$(VENV)/bin/python scripts/table_fingerprint.py $(abspath $(BIN)) > .fingerprint-this.txt
	diff .fingerprint-base.txt .fingerprint-this.txt && echo "same table contents"

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

clean:
	rm -rf lakehouse $(VENV) $(SPARK_VENV) interop/target
