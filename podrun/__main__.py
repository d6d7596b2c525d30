"""``python -m podrun``."""

from podrun.cli import main

if __name__ == "__main__":
    main()
