.PHONY: demo test lint bench man deb completion
demo:
	bash scripts/setup demo
test:
	bash scripts/setup test
lint:
	.venv/bin/ruff check podrun tests bench
	.venv/bin/mypy
bench:
	.venv/bin/python -m bench
deb:
	bash scripts/build-deb.sh dist
completion:
	_PODRUN_COMPLETE=bash_source .venv/bin/podrun > packaging/completion/podrun.bash
	_PODRUN_COMPLETE=zsh_source .venv/bin/podrun > packaging/completion/_podrun
