"""`python train.py [key=value ...]` is `emca train [key=value ...]` (emca/train.py): the embedded default with
no arguments (synthetic data, CPU)."""

from emca.train import main, train

__all__ = ["main", "train"]

if __name__ == "__main__":
    main()
