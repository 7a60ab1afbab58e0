"""aire-export: prune diagonal SSMs with AIRE-Prune, shrink them, lower them, prove the result.

Public API (DESIGN §8)::

    import aire_export as ax
    model = ax.load("model.pt")
    model = ax.import_checkpoint("s5-flax", "best_state.msgpack", config="run_args.json")
    ax.save(model, "model.pt")
    scores = ax.score(model, method="aire")
    pruned, plan = ax.prune(model, ratio=0.7, method="aire")
    mamba = ax.import_checkpoint("hf-mamba", "state-spaces/mamba-130m-hf/")
    pruned, plan = ax.prune(mamba, ratio=0.5, calib="calib.npz")  # selective: scored on data
    result = ax.export(pruned, "out/", target="onnx", scan="auto", precision="fp32")
    check = ax.validate(model, pruned, result, inputs=x)
"""

from aire_export.checkpoints import import_checkpoint, load, save
from aire_export.errors import AireError
from aire_export.lower import export
from aire_export.prune import prune, score
from aire_export.validate.validation import validate

__version__ = "0.1.0"

__all__ = [
    "AireError",
    "__version__",
    "export",
    "import_checkpoint",
    "load",
    "prune",
    "save",
    "score",
    "validate",
]
