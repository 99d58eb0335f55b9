"""`python eval.py [key=value ...]` is `emca eval [key=value ...]` (emca/evaluate.py)."""

from emca.evaluate import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
