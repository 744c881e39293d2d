"""SuperGLUE, FewGLUE and GLUE as seqio tasks (see tasks/README.md), the paper's
domain-shift tasks (MRQA: `qa.py`; zero-shot transfer between classification tasks:
`transfer.py`), summarization (`summarization.py`), the pre-training objectives over local
text (`pretraining.py`), and what the pre-training starts from: a vocabulary (`vocab.py`)
and word vectors (`word_vectors.py`).

Importing registers the tasks and mixtures; no data is read and nothing is
downloaded until a dataset is built.
"""
from . import glue  # noqa: F401  (registers the GLUE tasks)
from . import pretraining  # noqa: F401  (registers the pre-training objectives)
from . import qa  # noqa: F401  (registers the MRQA tasks)
from . import summarization  # noqa: F401  (registers XSum and CNN/DailyMail)
from . import superglue  # noqa: F401  (registers the SuperGLUE tasks)
from . import transfer  # noqa: F401  (registers the zero-shot transfer tasks)
from .registry import add_classification_task
from .registry import label_words
from .sources import TaskDataError
from .sources import local_data_dirs
from .vocab import get_vocabulary
from .vocab import train_vocabulary
from .word_vectors import train_word_vectors

__all__ = [
    'TaskDataError',
    'add_classification_task',
    'get_vocabulary',
    'label_words',
    'local_data_dirs',
    'train_vocabulary',
    'train_word_vectors',
]
