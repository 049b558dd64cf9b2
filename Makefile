# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST_WORKERS ?= 2

.PHONY: demo test test-slow icarus riscv firmware soc-sim bitstream bitstream-test clean
BOARD ?= ulx3s-85f

# A virtual environment with hwvirt installed (editable) and the test tools.
$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || $(MAKE) --no-print-directory apt-python-venv
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

.PHONY: apt-python-venv
apt-python-venv:
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv; \
	else echo "python3 -m venv is missing: install python3-venv" >&2; exit 1; fi

# Icarus Verilog for the cocotb tests: installed through apt-get when missing and we are root.
icarus:
	@command -v iverilog >/dev/null && command -v vvp >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq iverilog; \
	  else echo "Icarus Verilog is missing: sudo apt-get install iverilog" >&2; exit 1; fi; }

# The RISC-V cross compiler and picolibc for the soft core's firmware (Debian packages).
riscv:
	@command -v riscv64-unknown-elf-gcc >/dev/null && test -e /usr/lib/picolibc/riscv64-unknown-elf/picolibc.specs || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf; \
	  else echo "missing: sudo apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf" >&2; exit 1; fi; }

demo: $(STAMP)
	$(VENV)/bin/hwvirt run examples/vmcs_cache.toml --json build/demo/vmcs_cache.json --vcd build/demo/vmcs_cache.vcd
	@echo
	@echo "Why the Linux nmiexits module's first VMLAUNCH failed with error 8 (exit status 1: a check fails):"
	$(VENV)/bin/hwvirt check examples/linux_nmiexits_first_run.toml || test $$? -eq 1
	@echo
	@echo "Waveform: build/demo/vmcs_cache.vcd  (view: gtkwave build/demo/vmcs_cache.gtkw)"

test: $(STAMP) icarus riscv
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow" -p no:cacheprovider

test-slow: $(STAMP) icarus riscv
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "slow and not bitstream" -p no:cacheprovider

# The soft-core SoC: firmware image, a run on Icarus (UART text), a bitstream (BOARD=ulx3s-85f|icebreaker).
firmware: $(STAMP) riscv
	$(PY) -m hwvirt.fpga.build_firmware

soc-sim: $(STAMP) icarus riscv
	$(PY) -m hwvirt.fpga.sim_icarus --boot-sel 0

bitstream: $(STAMP) riscv
	$(VENV)/bin/pip install --quiet -e '.[fpga]'
	$(PY) -m hwvirt.fpga.build --board $(BOARD)

bitstream-test: $(STAMP) riscv
	$(VENV)/bin/pip install --quiet -e '.[fpga]'
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m bitstream -p no:cacheprovider

clean:
	rm -rf build .hypothesis
