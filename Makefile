.PHONY: demo test lint bench man
demo:
	bash scripts/setup demo
test:
	bash scripts/setup test
lint:
	.venv/bin/ruff check podrun tests bench
	.venv/bin/mypy
bench:
	.venv/bin/python -m bench
