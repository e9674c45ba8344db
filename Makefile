# `make run` starts the whole system on its embedded defaults; `make test` runs the tests. Both set up .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: run test install system-packages bench clean

# A machine with no NVIDIA GPU takes torch's CPU build where pip offers one (tools/cpu_torch.py says why: 4 GB less).
$(VENV)/.installed: setup.cfg pyproject.toml tools/cpu_torch.py
	$(PYTHON) -m venv $(VENV)
	wheel="$$($(PY) tools/cpu_torch.py)"; if [ -n "$$wheel" ]; then $(PIP) install -q "$$wheel"; fi
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/chatterbox up

# Debian's packages the tests drive: chromium for the browser tests (Playwright's own browser download is not used)
# and nginx, in front of the web app as README.md's reverse-proxy setup puts it.
SYSTEM_PACKAGES := chromium nginx
system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null 2>&1 || [ -x /usr/sbin/$$p ] || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing (cannot install without root): the tests that need them will be skipped"; fi; fi

# One test process per core, at most 4 (each starts its own system and browser): TEST_PROCESSES=0 runs them in one.
TEST_PROCESSES ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n > 4 ? 4 : n )))
test: $(VENV)/.installed-test system-packages
	$(PY) -m pytest -q -n $(TEST_PROCESSES)

bench: $(VENV)/.installed-test
	$(PY) bench/queue_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
