"""The UI's forms are the CLI's configs: defaults and help from the dataclasses, values validated by them, and
server-side paths guarded."""

from __future__ import annotations

import pytest

from magicportrait.errors import InputError
from magicportrait.pipelines.animate import AnimateConfig
from magicportrait.ui.forms import PATH_ASSETS, PathPolicy, build_config, form_fields


def test_fields_carry_the_cli_flag_default_and_help():
    fields = {field.name: field for field in form_fields(AnimateConfig)}
    assert fields["steps"].flag == "--steps" and fields["steps"].default == 20 and fields["steps"].kind == "int"
    assert fields["dtype"].kind == "choice" and fields["dtype"].choices == ("auto", "fp32", "fp16", "bf16")
    assert fields["edit_yaw"].flag == "--edit-yaw" and fields["edit_yaw"].ui_range == (0.0, 3.0)
    assert fields["geometric_blend"].flag == "--geometric-blend"
    assert {name for name, field in fields.items() if field.kind == "path"} == set(PATH_ASSETS)
    assert "Scale of the head's turn" in fields["edit_yaw"].help


def test_values_become_a_validated_config():
    fields = form_fields(AnimateConfig, ("edit_yaw", "steps", "context_overlap", "flame", "max_frames"))
    config = build_config(AnimateConfig, fields, [0.5, 7.0, None, "", 12])
    assert config.guide.edit.yaw == 0.5 and config.generation.steps == 7
    assert config.generation.context_overlap is None and config.guide.head.flame is None
    assert config.guide.write_frames is False  # AnimateConfig's own default for its guide, kept
    with pytest.raises(InputError, match="--steps takes a whole number"):
        build_config(AnimateConfig, fields, [0.5, 7.5, None, "", 12])
    with pytest.raises(InputError, match="--edit-yaw must be between 0 and 3"):
        build_config(AnimateConfig, fields, [9, 7, None, "", 12])


@pytest.mark.parametrize("name", ["edit_frames", "edit_relative", "face_box"])
def test_a_path_typed_into_a_text_field_is_refused(name):
    fields = form_fields(AnimateConfig, (name,))
    with pytest.raises(InputError):
        build_config(AnimateConfig, fields, ["../../etc/passwd"])


def test_path_policy(tmp_path):
    model = tmp_path / "generic_model.pkl"
    model.write_bytes(b"x")
    local = PathPolicy(editable=True)
    assert local.check("flame", str(model)) == str(model.resolve())
    assert local.check("flame", "") is None
    with pytest.raises(InputError, match="paths with '..' are refused"):
        local.check("flame", "../../etc/passwd")
    with pytest.raises(InputError, match="is not an existing folder"):
        local.check("weights", str(model))  # a file where a folder is needed
    remote = PathPolicy(editable=False, fixed={"flame": str(model)})
    assert remote.check("flame", str(model)) == str(model)
    with pytest.raises(InputError, match="--flame is fixed by the server"):
        remote.check("flame", "/etc/passwd")
    with pytest.raises(InputError, match="--weights is fixed by the server"):
        remote.check("weights", "/tmp")
