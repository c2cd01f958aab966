import torch

from mimsdk import create_model


def test_ema_teacher_takes_no_gradient_and_follows_the_ema_formula(tiny_kwargs):
    model = create_model(**tiny_kwargs, target="ema_latent")
    teacher = model.target.teacher
    assert all(not p.requires_grad for p in teacher.parameters())
    # the teacher starts as a copy of the student
    student_state = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    assert all(torch.equal(v, teacher.encoder.state_dict()[k]) for k, v in student_state.items())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.rand(4, 3, 32, 32)
    for step in range(3):
        model.progress = step / 10
        before = {k: v.clone() for k, v in teacher.encoder.state_dict().items()}
        out = model(x, generator=torch.Generator().manual_seed(step))
        out.loss.backward()
        assert all(p.grad is None for p in teacher.parameters())
        opt.step()
        opt.zero_grad()
        model.after_step()
        m = teacher.momentum(step / 10)
        assert 0.999 <= m <= 0.9999
        student = model.encoder.state_dict()
        for key, value in teacher.encoder.state_dict().items():
            assert torch.allclose(value, m * before[key] + (1 - m) * student[key], atol=1e-7), key
    # the student moved, so the teacher moved too, but by far less
    drift_teacher = (teacher.encoder.blocks[0].attn.qkv.weight - student_state["blocks.0.attn.qkv.weight"]).abs()
    drift_student = (model.encoder.blocks[0].attn.qkv.weight - student_state["blocks.0.attn.qkv.weight"]).abs()
    assert 0 < drift_teacher.sum() < 0.01 * drift_student.sum()


def test_latent_targets_are_normalised_and_not_collapsed(tiny_kwargs):
    model = create_model(**tiny_kwargs, target="ema_latent")
    tok = model.tokenize(torch.rand(3, 3, 32, 32))
    target = model.target.teacher(tok.patches)
    assert target.shape == (3, 64, 192)
    assert torch.allclose(target.mean(-1), torch.zeros(3, 64), atol=1e-5)  # layer-normalised per token
    assert model.target.teacher.last_std > 0.1  # tokens differ from one another
