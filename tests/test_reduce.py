"""Layer reduction: which teacher layers the student keeps, and that it starts as their copy."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from xtc.core.errors import XtcError
from xtc.train import arch as archs
from xtc.train.reduce import reduce_layers, select_layers


def test_default_keeps_odd_layers_including_the_last():
    assert select_layers(12) == [1, 3, 5, 7, 9, 11]
    assert select_layers(30) == list(range(1, 30, 2)) and len(select_layers(30)) == 15
    assert select_layers(6, "even") == [0, 2, 4]
    assert select_layers(6, "5,0,2") == [0, 2, 5]


@pytest.mark.parametrize("bad", ["1,1", "7", "-1", "a,b", ""])
def test_bad_layer_lists_are_refused(bad):
    with pytest.raises(XtcError):
        select_layers(6, bad)


def test_student_is_initialised_from_the_kept_teacher_layers(tiny_dirs, arch):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch])
    student = reduce_layers(teacher, [1, 3])
    t_layers, s_layers = archs.decoder_layers(teacher), archs.decoder_layers(student)
    assert len(s_layers) == 2 and len(t_layers) == 4
    for s, t in zip(s_layers, [t_layers[1], t_layers[3]]):
        for (ns, ps), (nt, pt) in zip(s.named_parameters(), t.named_parameters()):
            assert ns == nt and torch.equal(ps, pt)
    emb = archs.arch_of(teacher.config).embeddings[0]
    assert torch.equal(student.get_submodule(emb).weight, teacher.get_submodule(emb).weight)
    assert student.config.num_hidden_layers == 2
    # the KV cache is indexed by layer: the student's layers are renumbered 0..n-1
    assert [m.layer_idx for m in student.modules() if hasattr(m, "layer_idx")] == sorted(
        m.layer_idx for m in student.modules() if hasattr(m, "layer_idx"))
    with torch.no_grad():
        out = student(torch.tensor([[1, 2, 3, 4]]), use_cache=True)
    assert torch.isfinite(out.logits).all()
