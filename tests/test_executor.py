"""BatchedDenoiser: static-buffer logic on CPU, CUDA-graph replay vs eager where a GPU exists."""

from __future__ import annotations

import pytest
import torch

from paradigms_policy.model.conditional_unet1d import ConditionalUnet1D
from paradigms_policy.runtime import BatchedDenoiser, default_executor, resolve_device, resolve_dtype, set_cpu_threads

HORIZON, ACTION_DIM, COND_DIM = 8, 3, 5
EVENT = (HORIZON, ACTION_DIM)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_unet() -> ConditionalUnet1D:
    torch.manual_seed(0)
    return ConditionalUnet1D(
        ACTION_DIM, global_cond_dim=COND_DIM, diffusion_step_embed_dim=16, down_dims=(16, 32), n_groups=4
    ).eval()


@pytest.fixture(scope="module")
def model() -> ConditionalUnet1D:
    return tiny_unet()


def direct(model, x, t, cond):
    """Reference: call the network sample by sample, W*B separate forward passes."""
    window, batch = x.shape[:2]
    out = torch.empty_like(x)
    with torch.no_grad():
        for w in range(window):
            for b in range(batch):
                out[w, b] = model(x[w, b : b + 1], t[w : w + 1], global_cond=cond[b : b + 1])[0]
    return out


@pytest.mark.parametrize("window,batch", [(1, 1), (3, 1), (4, 2), (7, 3)])
def test_matches_direct_model_calls(model, window, batch):
    gen = torch.Generator().manual_seed(window * 10 + batch)
    denoiser = BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM)
    cond = torch.randn(batch, COND_DIM, generator=gen)
    x = torch.randn(window, batch, *EVENT, generator=gen)
    t = torch.randint(0, 100, (window,), generator=gen)
    denoiser.bind(cond)
    out = denoiser(x, t)
    assert out.shape == x.shape
    torch.testing.assert_close(out, direct(model, x, t, cond), atol=1e-5, rtol=1e-4)


def test_distinct_timesteps_and_conditions_matter(model):
    # Guards against broadcasting t or cond wrongly: swapping them must change the output.
    denoiser = BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM)
    cond = torch.randn(2, COND_DIM)
    x = torch.randn(2, 2, *EVENT)
    denoiser.bind(cond)
    out = denoiser(x, torch.tensor([3, 90]))
    swapped_t = denoiser(x, torch.tensor([90, 3]))
    assert not torch.allclose(out, swapped_t)
    denoiser.bind(cond.flip(0))
    swapped_cond = denoiser(x, torch.tensor([3, 90]))
    assert not torch.allclose(out, swapped_cond)


def test_static_buffers_are_reused(model):
    denoiser = BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM)
    denoiser.warmup([1, 4], batch=2)
    slots = {w: denoiser._slots[w] for w in (1, 4)}
    ptrs = {w: (s.sample.data_ptr(), s.output.data_ptr(), s.cond.data_ptr(), s.timestep.data_ptr()) for w, s in slots.items()}
    denoiser.bind(torch.randn(2, COND_DIM))
    for _ in range(3):
        for w in (1, 4):
            denoiser(torch.randn(w, 2, *EVENT), torch.arange(w))
    assert denoiser.window_sizes == [1, 4]
    for w, slot in slots.items():
        assert denoiser._slots[w] is slot
        assert (slot.sample.data_ptr(), slot.output.data_ptr(), slot.cond.data_ptr(), slot.timestep.data_ptr()) == ptrs[w]


def test_output_is_not_aliased_to_static_buffer(model):
    denoiser = BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM)
    denoiser.bind(torch.randn(1, COND_DIM))
    x = torch.randn(2, 1, *EVENT)
    first = denoiser(x, torch.tensor([5, 6]))
    kept = first.clone()
    assert first.data_ptr() != denoiser._slots[2].output.data_ptr()
    denoiser(torch.randn(2, 1, *EVENT), torch.tensor([50, 60]))
    torch.testing.assert_close(first, kept, rtol=0, atol=0)


def test_bind_updates_conditioning_of_existing_windows(model):
    denoiser = BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM)
    denoiser.warmup([3], batch=2)  # buffers exist with zero conditioning
    cond = torch.randn(2, COND_DIM)
    x = torch.randn(3, 2, *EVENT)
    t = torch.tensor([1, 2, 3])
    denoiser.bind(cond)
    torch.testing.assert_close(denoiser(x, t), direct(model, x, t, cond), atol=1e-5, rtol=1e-4)


def test_rebinding_a_different_batch_reallocates(model):
    denoiser = BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM)
    denoiser.bind(torch.randn(2, COND_DIM))
    denoiser(torch.randn(3, 2, *EVENT), torch.tensor([1, 2, 3]))
    old_slot = denoiser._slots[3]
    cond = torch.randn(4, COND_DIM)
    denoiser.bind(cond)
    assert denoiser.batch == 4 and denoiser.window_sizes == []
    x = torch.randn(3, 4, *EVENT)
    t = torch.tensor([7, 8, 9])
    out = denoiser(x, t)
    assert denoiser._slots[3] is not old_slot
    assert denoiser._slots[3].sample.shape == (12, *EVENT)
    torch.testing.assert_close(out, direct(model, x, t, cond), atol=1e-5, rtol=1e-4)


def test_counters_count_calls_and_evaluations_but_not_warmup(model):
    denoiser = BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM)
    denoiser.warmup([1, 5], batch=3)
    assert (denoiser.calls, denoiser.evaluations) == (0, 0)
    denoiser.bind(torch.randn(3, COND_DIM))
    denoiser(torch.randn(5, 3, *EVENT), torch.arange(5))
    denoiser(torch.randn(1, 3, *EVENT), torch.tensor([0]))
    assert (denoiser.calls, denoiser.evaluations, denoiser.samples_evaluated) == (2, 6, 18)
    denoiser.reset_counters()
    assert (denoiser.calls, denoiser.evaluations, denoiser.samples_evaluated) == (0, 0, 0)


def test_lifetime_counters_count_allocations_once(model):
    denoiser = BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM)
    denoiser.warmup([3, 1, 3, 2], batch=2, run=False)
    assert (denoiser.slots_created, denoiser.graphs_captured) == (3, 0)
    assert denoiser.window_sizes == [1, 2, 3]
    denoiser.bind(torch.randn(2, COND_DIM))
    for w in (1, 2, 3, 3):
        denoiser(torch.randn(w, 2, *EVENT), torch.arange(w))
    denoiser.reset_counters()
    assert denoiser.slots_created == 3  # call counters reset, lifetime counters do not
    denoiser(torch.randn(5, 2, *EVENT), torch.arange(5))  # a size nobody warmed
    assert denoiser.slots_created == 4
    denoiser.bind(torch.randn(1, COND_DIM))  # a new batch size drops every slot
    denoiser(torch.randn(1, 1, *EVENT), torch.tensor([0]))
    assert denoiser.slots_created == 5 and denoiser.window_sizes == [1]


def test_narrower_calls_use_the_widest_slot_and_stay_exact(model):
    """A shrinking window reuses one slot (no allocation); results equal a direct call of each width."""
    denoiser = BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM)
    denoiser.warmup([1, 6], batch=2, run=False)
    cond = torch.randn(2, COND_DIM)
    denoiser.bind(cond)
    gen = torch.Generator().manual_seed(3)
    for w in (6, 5, 3, 2, 1, 6):
        x = torch.randn(w, 2, *EVENT, generator=gen)
        t = torch.randint(0, 100, (w,), generator=gen)
        assert denoiser.slot_width_for(w) == (1 if w == 1 else 6)
        torch.testing.assert_close(denoiser(x, t), direct(model, x, t, cond), atol=1e-5, rtol=1e-4)
    assert denoiser.slots_created == 2 and denoiser.window_sizes == [1, 6]
    assert denoiser.slot_width_for(7) is None


def test_warmup_without_run_leaves_the_network_alone(model):
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        denoiser = BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM)
        denoiser.warmup([1, 2, 3], batch=1, run=False)
        assert calls == []
        denoiser.warmup([1, 2, 3], batch=1)
        assert len(calls) == 3
    finally:
        handle.remove()


def test_output_follows_input_dtype(model):
    denoiser = BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM)
    denoiser.bind(torch.randn(1, COND_DIM))
    x = torch.randn(2, 1, *EVENT, dtype=torch.float64)
    out = denoiser(x, torch.tensor([1, 2]))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, direct(model, x.float(), torch.tensor([1, 2]), denoiser._cond).double(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda d: d(torch.randn(2, 1, *EVENT), torch.tensor([1, 2])), "before bind"),
    ],
)
def test_call_before_bind_raises(model, call, match):
    with pytest.raises(RuntimeError, match=match):
        call(BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM))


@pytest.mark.parametrize(
    "cond,match",
    [
        (torch.full((1, COND_DIM), float("nan")), "NaN"),
        (torch.randn(1, COND_DIM + 1), "shape"),
        (torch.randn(COND_DIM), "shape"),
    ],
)
def test_bad_conditioning_raises(model, cond, match):
    denoiser = BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM)
    with pytest.raises(ValueError, match=match):
        denoiser.bind(cond)


@pytest.mark.parametrize(
    "x,t,match",
    [
        (torch.randn(2, 3, *EVENT), torch.tensor([1, 2]), "x must have shape"),  # wrong batch
        (torch.randn(2, 2, HORIZON, ACTION_DIM + 1), torch.tensor([1, 2]), "x must have shape"),
        (torch.randn(2, 2, *EVENT), torch.tensor([1, 2, 3]), "t must be"),
        (torch.randn(2, 2, *EVENT), torch.tensor([1.0, 2.0]), "t must be"),
    ],
)
def test_bad_call_inputs_raise(model, x, t, match):
    denoiser = BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM)
    denoiser.bind(torch.randn(2, COND_DIM))
    with pytest.raises(ValueError, match=match):
        denoiser(x, t)


def test_bad_construction_raises(model):
    with pytest.raises(ValueError, match="executor"):
        BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM, executor="tensorrt")
    with pytest.raises(ValueError, match="CUDA|cuda"):
        BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM, executor="cuda_graph", device="cpu")
    with pytest.raises(ValueError, match="window"):
        BatchedDenoiser(model, event_shape=EVENT, cond_dim=COND_DIM).warmup([0], batch=1)


def test_device_policy():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype(None) is torch.float32 and resolve_dtype("float64") is torch.float64
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8")
    assert default_executor("cpu") == "eager"
    previous = torch.get_num_threads()
    try:
        assert set_cpu_threads(1) == 1
    finally:
        torch.set_num_threads(previous)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_device("cuda")


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("window,batch", [(1, 1), (4, 2), (16, 1)])
def test_cuda_graph_replay_matches_eager(window, batch):
    reference = tiny_unet()  # same seed, same weights, stays on the CPU
    eager = BatchedDenoiser(tiny_unet(), event_shape=EVENT, cond_dim=COND_DIM, device="cuda")
    graph = BatchedDenoiser(tiny_unet(), event_shape=EVENT, cond_dim=COND_DIM, device="cuda", executor="cuda_graph")
    graph.warmup([window], batch=batch)
    assert graph._slots[window].graph is not None
    for trial in range(3):  # replays with fresh inputs and a fresh binding each time
        gen = torch.Generator().manual_seed(trial)
        cond = torch.randn(batch, COND_DIM, generator=gen)
        x = torch.randn(window, batch, *EVENT, generator=gen)
        t = torch.randint(0, 100, (window,), generator=gen)
        eager.bind(cond.cuda())
        graph.bind(cond.cuda())
        expected = eager(x.cuda(), t.cuda())
        got = graph(x.cuda(), t)  # t on CPU is copied into the captured timestep buffer
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        assert got.data_ptr() != graph._slots[window].output.data_ptr()
        torch.testing.assert_close(got.cpu(), direct(reference, x, t, cond), atol=1e-4, rtol=1e-3)


@needs_cuda
@pytest.mark.cuda
def test_cuda_graph_of_the_widest_round_serves_narrower_calls():
    """One captured width: narrower calls replay it padded, and their rows equal the eager result."""
    reference = tiny_unet()
    graph = BatchedDenoiser(tiny_unet(), event_shape=EVENT, cond_dim=COND_DIM, device="cuda", executor="cuda_graph")
    graph.warmup([1, 8], batch=2)
    assert graph.graphs_captured == 2
    gen = torch.Generator().manual_seed(1)
    cond = torch.randn(2, COND_DIM, generator=gen)
    graph.bind(cond.cuda())
    for w in (8, 5, 2, 7, 1):
        x = torch.randn(w, 2, *EVENT, generator=gen)
        t = torch.randint(0, 100, (w,), generator=gen)
        torch.testing.assert_close(graph(x.cuda(), t).cpu(), direct(reference, x, t, cond), atol=1e-4, rtol=1e-3)
    assert graph.graphs_captured == graph.slots_created == 2


@needs_cuda
@pytest.mark.cuda
def test_cuda_graphs_of_many_windows_share_a_pool_and_replay_in_any_order():
    """Graphs captured largest first into one pool; replaying them out of order stays exact."""
    reference = tiny_unet()
    graph = BatchedDenoiser(tiny_unet(), event_shape=EVENT, cond_dim=COND_DIM, device="cuda", executor="cuda_graph")
    windows = list(range(1, 17))
    graph.warmup(windows, batch=2)
    assert graph.window_sizes == windows and graph.graphs_captured == graph.slots_created == 16
    gen = torch.Generator().manual_seed(0)
    cond = torch.randn(2, COND_DIM, generator=gen)
    graph.bind(cond.cuda())
    for w in (16, 1, 7, 3, 16, 2, 9):
        x = torch.randn(w, 2, *EVENT, generator=gen)
        t = torch.randint(0, 100, (w,), generator=gen)
        torch.testing.assert_close(graph(x.cuda(), t).cpu(), direct(reference, x, t, cond), atol=1e-4, rtol=1e-3)
    assert graph.graphs_captured == 16
