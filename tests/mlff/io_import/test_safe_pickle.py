"""The restricted unpickler: model pickles become inert records, anything that could run code
is refused before it runs."""

import os
import pickle
from pathlib import Path

import pytest
import torch

from mlff.errors import ModelFileError
from mlff.io_import.safe_pickle import Pickled, UnsafePickleError, find, load_pickled

from test_mace_import import model_fixture

FIXTURES = Path(__file__).parent / "fixtures"



class TouchFile:
    """Unpickling this runs ``os.system("touch PATH")`` (the classic malicious pickle)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class EvalCode:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def _save(obj, path: Path) -> Path:
    torch.save({"model": obj, "weights": torch.ones(3)}, path)
    return path


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = _save(TouchFile(marker), tmp_path / "evil.model")
    with pytest.raises(UnsafePickleError, match=r"'(posix|os)\.system'"):
        load_pickled(path)
    assert not marker.exists()
    # the payload is live: the unrestricted loader does create the file (so the check above
    # can fail)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_builtins_eval_is_refused(tmp_path):
    path = _save(EvalCode(), tmp_path / "eval.model")
    with pytest.raises(UnsafePickleError, match=r"(__builtin__|builtins)\.eval"):
        load_pickled(path)


def test_fx_generated_code_is_recorded_never_executed(tmp_path):
    """e3nn's generated modules pickle as ``torch.fx.graph_module.reduce_graph_module(body,
    import_block)``, which execs code on a normal load; here it is only a record."""
    marker = tmp_path / "fx-ran"

    class FakeGraphModule:
        def __reduce__(self):
            from torch.fx.graph_module import reduce_graph_module

            return (reduce_graph_module, ({"_code": f"import os\nos.system('touch {marker}')"},
                                          f"import os; os.system('touch {marker}')"))

    path = _save(FakeGraphModule(), tmp_path / "fx.model")
    loaded = load_pickled(path)
    assert isinstance(loaded["model"], Pickled)
    assert loaded["model"].qualname == "torch.fx.graph_module.reduce_graph_module"
    assert not marker.exists()


def test_unlisted_package_is_refused(tmp_path):
    import collections

    path = tmp_path / "other.model"
    torch.save({"x": collections.Counter("abc")}, path)  # a class outside the allow-list
    with pytest.raises(UnsafePickleError, match=r"collections\.Counter"):
        load_pickled(path)


def test_not_a_torch_archive(tmp_path):
    path = tmp_path / "legacy.model"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match="not a torch.save zip archive"):
        load_pickled(path)


def test_mace_model_becomes_records_with_real_tensors():
    root = load_pickled(model_fixture("plainfirst_L0_ell3_corr3.model"))
    assert root.qualname == "mace.modules.models.ScaleShiftMACE"
    assert [name for name, _ in find(root, "Contraction")] == [
        "products.0.symmetric_contractions.contractions.0",
        "products.1.symmetric_contractions.contractions.0"]
    weight = root.child("node_embedding").child("linear").tensor("weight")
    assert isinstance(weight, torch.Tensor) and weight.dtype == torch.float64 and weight.numel() == 24
    assert torch.equal(root.tensor("atomic_numbers"), torch.tensor([1, 6, 8]))
