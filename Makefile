.PHONY: kernels
# Debian kernels and QEMU for the VM tests (internal/vmtest).
kernels:
	bash scripts/fetch-kernels.sh
