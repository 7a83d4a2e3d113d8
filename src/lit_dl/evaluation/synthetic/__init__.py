"""Synthetic-data report: fidelity, machine-learning efficacy and privacy of a synthetic table.

* :mod:`~lit_dl.evaluation.synthetic.fidelity`: column shapes and column-pair trends.
* :mod:`~lit_dl.evaluation.synthetic.efficacy`: classifiers trained on synthetic rows (TSTR) and on
  real rows (TRTR), tested on real held-out rows.
* :mod:`~lit_dl.evaluation.synthetic.privacy`: distances to the closest training record, exact copies.
* :mod:`~lit_dl.evaluation.synthetic.features`: rows as scikit-learn features (efficacy and privacy).
* :mod:`~lit_dl.evaluation.synthetic.report`: ``build_report``, the whole report as plain data.
* :mod:`~lit_dl.evaluation.synthetic.render`: ``write_report`` writes ``report.json``, ``report.md``
  and PNG plots (real beside synthetic) for each column; ``summary_lines`` gives the headlines.

Note: ``fidelity`` imported from this package is the function; its module is
``lit_dl.evaluation.synthetic.fidelity`` (import names from it with ``from ... import``).
"""

from lit_dl.evaluation.synthetic.fidelity import fidelity
from lit_dl.evaluation.synthetic.render import summary_lines, write_report
from lit_dl.evaluation.synthetic.report import build_report

__all__ = ["build_report", "fidelity", "summary_lines", "write_report"]
