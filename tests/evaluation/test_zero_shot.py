import math

import pytest
import torch

from omnibind.evaluation.zero_shot import class_keys, format_prompts, prototypes, zero_shot_accuracy


def test_class_keys_from_facts_and_labels():
    facts = [{"colour": "red", "shape": "circle", "label": 3}, {"colour": "blue", "shape": "square"}]
    assert class_keys(facts, ["shape", "colour"]) == [("circle", "red"), ("square", "blue")]
    assert class_keys(facts[:1], ["label", "colour"]) == [(3, "red")]
    assert class_keys(["cat", "dog"], ["label"]) == [("cat",), ("dog",)]


def test_class_keys_errors_name_item_and_field():
    with pytest.raises(ValueError, match="item 1 has no field 'shape'"):
        class_keys([{"shape": 1}, {"colour": 2}], ["shape"])
    with pytest.raises(ValueError, match="plain label"):
        class_keys(["cat"], ["colour"])


def test_zero_shot_accuracy_constructed():
    classes = [("red",), ("green",), ("blue",)]
    class_embs = torch.eye(3)
    items = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.0, 0.2, 0.7], [0.6, 0.3, 0.1]])
    keys = [("red",), ("green",), ("blue",), ("blue",)]  # the last one is predicted red
    out = zero_shot_accuracy(items, keys, class_embs, classes)
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["n"] == 4
    assert out["per_class"] == {"red": 1.0, "green": 1.0, "blue": 0.5}


def test_zero_shot_unknown_class_raises_naming_it():
    with pytest.raises(ValueError, match=r"\('purple',\)"):
        zero_shot_accuracy(torch.eye(2), [("red",), ("purple",)], torch.eye(2), [("red",), ("green",)])


def test_zero_shot_empty_and_shape_checks():
    out = zero_shot_accuracy(torch.zeros(0, 2), [], torch.eye(2), [("a",), ("b",)])
    assert out["n"] == 0 and math.isnan(out["accuracy"])
    with pytest.raises(ValueError, match="item keys"):
        zero_shot_accuracy(torch.eye(2), [("a",)], torch.eye(2), [("a",), ("b",)])


def test_format_prompts():
    out = format_prompts(
        ["a {colour} {shape}", "the {shape} is {colour}", "a shape"],
        ["colour", "shape"],
        [("red", "circle"), ("blue", "square")],
    )
    assert out == [
        ["a red circle", "the circle is red", "a shape"],
        ["a blue square", "the square is blue", "a shape"],
    ]


def test_format_prompts_errors():
    with pytest.raises(ValueError, match=r"\{size\}"):
        format_prompts(["a {size} {shape}"], ["shape"], [("circle",)])
    with pytest.raises(ValueError, match="2 values"):
        format_prompts(["a {shape}"], ["shape"], [("circle", "red")])


def test_prototypes_normalised_means_in_first_appearance_order():
    embs = torch.tensor([[0.0, 2.0], [1.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    classes, protos = prototypes(embs, [("b",), ("a",), ("b",), ("a",)])
    assert classes == [("b",), ("a",)]
    expected = torch.nn.functional.normalize(torch.tensor([[0.5, 1.5], [2.0, 0.0]]), dim=1)
    assert torch.allclose(protos, expected)
    # prototypes of the items themselves classify them
    out = zero_shot_accuracy(embs, [("b",), ("a",), ("b",), ("a",)], protos, classes)
    assert out["accuracy"] == 1.0
