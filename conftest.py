"""The project's root conftest. The vit-audit plugin registers itself through its pytest11 entry point (installed
with the package), so ``pytest checks`` from the project root needs nothing here."""
