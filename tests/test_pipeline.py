"""Input pipeline: buckets, deterministic order, full train batches, exactly-once evaluation,
per-host rows, prefetch, the feature cache, and no recompilation after warm-up."""

import jax
import numpy as np
import pytest
import toy_experiment

from ptjax.data import pipeline
from ptjax.errors import InputError
from ptjax.training.step import step_rng


def split_of(lengths, buckets=(4, 8), extra=None):
    features = [{"ids": np.arange(n, dtype=np.int32), "label": i % 3, **(extra or {})}
                for i, n in enumerate(lengths)]
    return pipeline.prepare_split("s", features, {"ids": -1}, {}, buckets)


def test_bucket_lengths_and_padding():
    split = split_of([1, 3, 4, 5, 8, 11])
    assert split.buckets == {"length": (4, 8, 11)}  # the over-long tail gets its own shape
    assert split.batch_lengths(np.array([0, 1])) == {"length": 4}
    assert split.batch_lengths(np.array([0, 3])) == {"length": 8}
    assert split.batch_lengths(np.array([5])) == {"length": 11}
    batch = pipeline.collate(split, np.array([1, 3]), {"length": 8})
    np.testing.assert_array_equal(batch["ids"][0], [0, 1, 2, -1, -1, -1, -1, -1])
    assert batch["ids"].shape == (2, 8) and batch["label"].tolist() == [1, 0]
    assert batch["valid"].tolist() == [True, True] and batch["index"].tolist() == [1, 3]
    assert pipeline.prepare_split("s", [{"ids": np.zeros(40)}], {"ids": 0}, {}, ()).buckets == {
        "length": (16, 32, 64)}


def test_length_groups_are_bucketed_separately():
    features = [{"src": np.zeros(n), "tgt": np.zeros(m)} for n, m in [(3, 9), (7, 2)]]
    split = pipeline.prepare_split("s", features, {"src": 0, "tgt": 0}, {"tgt": "target_length"}, (4, 8, 16))
    assert split.batch_lengths(np.array([0])) == {"length": 4, "target_length": 16}
    assert split.batch_lengths(np.array([1])) == {"length": 8, "target_length": 4}


def test_bad_features_are_refused_clearly():
    split = split_of([2, 3], extra=None)
    split.features[1]["label"] = np.zeros(2)
    with pytest.raises(InputError, match="field 'label' has shapes"):
        pipeline.collate(split, np.array([0, 1]), {"length": 4})
    with pytest.raises(InputError, match="example 1: fields"):
        pipeline.prepare_split("s", [{"a": 1}, {"b": 2}], {}, {}, ())
    with pytest.raises(InputError, match="has no examples"):
        pipeline.prepare_split("s", [], {}, {}, ())


def test_train_order_is_deterministic_full_and_epoch_shuffled():
    order = pipeline.TrainOrder(num_examples=10, batch_size=3, seed=5)
    assert order.steps_per_epoch == 3  # the last partial batch is dropped
    epoch0 = [order.rows(s) for s in range(3)]
    assert all(len(rows) == 3 for rows in epoch0)
    assert len(set(np.concatenate(epoch0).tolist())) == 9  # no repeats inside an epoch
    again = pipeline.TrainOrder(10, 3, 5)
    assert all(np.array_equal(a, again.rows(s)) for s, a in enumerate(epoch0))
    assert not np.array_equal(order.epoch_order(0), order.epoch_order(1))
    assert not np.array_equal(order.epoch_order(0), pipeline.TrainOrder(10, 3, 6).epoch_order(0))
    assert order.position(7) == (2, 1) and np.array_equal(order.rows(7), order.epoch_order(2)[3:6])


def test_hosts_feed_disjoint_rows_of_the_same_batches():
    split = split_of(list(range(1, 13)))
    order = pipeline.TrainOrder(len(split), 4, 0)
    hosts = [list(pipeline.train_batches(split, order, start_step=0, stop_step=3, host_range=r,
                                         to_device=lambda b: b)) for r in ((0, 2), (2, 4))]
    for a, b in zip(*hosts):
        assert a.arrays["ids"].shape[1] == b.arrays["ids"].shape[1]  # same bucket on every host
        rows = np.concatenate([a.arrays["index"], b.arrays["index"]])
        np.testing.assert_array_equal(rows, a.rows)


@pytest.mark.parametrize("size, batch", [(10, 4), (8, 4), (3, 8)])
def test_evaluation_covers_every_example_exactly_once(size, batch):
    split = split_of([1 + (7 * i) % 11 for i in range(size)])
    seen = []
    for b in pipeline.eval_batches(split, batch, host_range=(0, batch), to_device=lambda x: x):
        assert b.arrays["ids"].shape[0] == batch
        assert b.arrays["ids"].shape[1] in split.buckets["length"]
        seen += b.arrays["index"][b.arrays["valid"]].tolist()
        assert (b.arrays["index"][~b.arrays["valid"]] == -1).all()
    assert sorted(seen) == list(range(size))


def test_prefetch_keeps_order_and_reraises():
    with pipeline.Prefetch(iter(range(20)), size=3) as items:
        assert list(items) == list(range(20))
        assert list(items) == []

    def broken():
        yield 1
        raise InputError("data.jsonl:2: bad line")

    with pipeline.Prefetch(broken()) as items, pytest.raises(InputError, match="data.jsonl:2"):
        list(items)
    endless = pipeline.Prefetch(iter(lambda: 0, 1), size=2)
    next(endless)
    endless.close()  # a consumer that stops early does not leave the thread blocked
    assert not endless._thread.is_alive()


def test_features_are_tokenized_once_per_workdir(tmp_path):
    task = toy_experiment.ParityTask({"train": 5})
    first = pipeline.load_features(task, "train", tmp_path, "key")
    second = pipeline.load_features(task, "train", tmp_path, "key")
    assert task.feature_calls == ["train"]
    assert [f["label"] for f in first] == [f["label"] for f in second]


@pytest.mark.slow
def test_no_recompilation_after_warm_up(tiny_model_dir, tmp_path):
    """Two epochs of varied lengths: traces happen only for new bucket shapes (epoch 1)."""
    config = toy_experiment.toy_config(tiny_model_dir("bert"), tmp_path, **{
        "task.length_buckets": (8, 32), "train.batch_size": 2})
    traces = []
    model, data = toy_experiment.build(config, sizes={"train": 24}, trace_counter=traces)
    steps_per_epoch = 24 // config.train.batch_size
    _, trainable, frozen, opt_state, step, batches = toy_experiment.prepared(
        config, model, data, devices=jax.devices()[:1], total_steps=2 * steps_per_epoch)
    shapes = [b["input_ids"].shape for b in batches]
    for i, batch in enumerate(batches):
        trainable, opt_state, _ = step(trainable, frozen, opt_state, batch, step_rng(jax.random.PRNGKey(0), i))
        if i == steps_per_epoch - 1:
            traces_after_epoch = len(traces)
    assert len(set(shapes)) == 2  # both buckets occur (the data has lengths 3..20 + prompt)
    assert traces_after_epoch == len(set(shapes[:steps_per_epoch])) == 2
    assert len(traces) == len(set(shapes))  # nothing new traced in epoch 2
