"""``magicportrait ui``: the browser page (Gradio) over :class:`~magicportrait.ui.studio.Studio`.

Tab "Reenact": portrait (its faces boxed and numbered once uploaded), driving video / saved motion / the bundled
example, the motion panel, an Advanced accordion; "Draft" makes the geometric preview in seconds, "Render with
diffusion" renders the same aligned motion. Tab "Retarget a still": sliders for the eyes, lips and head turn whose
preview updates when a slider is released. Every widget is made from a config field (label = the CLI flag, info =
its help, value = its default).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace

import gradio as gr

from magicportrait.errors import MagicPortraitError
from magicportrait.pipelines.evaluate import VIDEO_SUFFIXES
from magicportrait.pipelines.retarget import RetargetConfig
from magicportrait.ui.forms import UNSET_CHOICE, FormField, choice_options, form_fields
from magicportrait.ui.studio import AUTO_FACE, Studio

logger = logging.getLogger(__name__)
TITLE = "magicportrait"
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".bmp"]
MOTION_TYPES = [".npz"]
VIDEO_TYPES = sorted(VIDEO_SUFFIXES)
PROGRESS = gr.Progress(track_tqdm=True)  # the pipelines' tqdm bars, shown in the page


def readable_errors(function):
    """A handler whose MagicPortraitError (bad input, missing weights) shows as a message in the page, and whose
    bugs show as one line pointing to the server's log; the server keeps serving either way."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except MagicPortraitError as error:
            raise gr.Error(str(error), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as error:  # a bug: the trace goes to the server's log, the page gets one line
            logger.exception("UI action failed")
            raise gr.Error(f"Internal error ({type(error).__name__}); the server's log has the details.",
                           print_exception=False) from None

    return wrapper


def widget(field: FormField, editable: bool = True, value=None):
    """The Gradio component of a config field (``value``: instead of the field's default)."""
    label, info = field.flag, field.help
    interactive = editable or field.kind != "path"
    if value is not None:
        field = replace(field, default=value)
    if field.kind == "bool":
        return gr.Checkbox(value=field.default, label=label, info=info)
    if field.kind == "choice":
        value = UNSET_CHOICE if field.default is None else field.default
        return gr.Dropdown(choices=choice_options(field), value=value, label=label, info=info)
    if field.ui_range is not None and field.kind in ("int", "float"):
        low, high = field.ui_range
        step = 1 if field.kind == "int" else 0.05
        return gr.Slider(low, high, value=field.default if field.default is not None else low, step=step,
                         label=label, info=info)
    if field.kind in ("int", "float") and field.optional:  # blank = none (a number field would send 0)
        return gr.Textbox(value="" if field.default is None else str(field.default), label=label, info=info,
                          placeholder="none")
    if field.kind in ("int", "float"):
        return gr.Number(value=field.default, label=label, info=info, precision=0 if field.kind == "int" else None)
    value = "" if field.default is None else str(field.default)
    return gr.Textbox(value=value, label=label, info=info, interactive=interactive)


def build_app(studio: Studio, weights_configured: bool = False) -> gr.Blocks:
    """The page (see the module docstring)."""
    editable = studio.paths.editable
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown("# magicportrait\nOne portrait + a driving video: the portrait performs its motion.")
        draft_state = gr.State(None)
        with gr.Tab("Reenact"), gr.Row():
            with gr.Column(scale=1):
                with gr.Row():
                    portrait = gr.Image(type="filepath", label="Portrait", sources=["upload"], elem_id="portrait",
                                        height=280)
                    faces = gr.Image(label="Faces found (numbered from the left)", interactive=False,
                                     elem_id="faces", height=280)
                with gr.Row():
                    face = gr.Dropdown(choices=[AUTO_FACE], value=AUTO_FACE, label="Face", elem_id="face",
                                       allow_custom_value=True,  # the studio checks it (an API call may skip /faces)
                                       info="Which face to animate (the numbers of the faces picture).")
                    face_box = gr.Textbox(label="--face-box", info="Or the face's box in the portrait, "
                                          "x,y,width,height pixels (a face the detector missed).", elem_id="face_box")
                with gr.Row():
                    # A file field, not gr.Video: the browser side of Gradio's video input fetches ffmpeg.wasm
                    # from a CDN, which an offline server cannot reach.
                    driving = gr.File(label="Driving video", file_types=VIDEO_TYPES, type="filepath",
                                      elem_id="driving", height=110)
                    motion = gr.File(label="Or a saved motion (aligned_head.npz)", file_types=MOTION_TYPES,
                                     type="filepath", elem_id="motion", height=110)
                example = gr.Button("Use the bundled example", size="sm", elem_id="example")
                with gr.Accordion("Motion", open=True):
                    motion_widgets = [widget(field) for field in studio.motion_fields]
                with gr.Accordion("Advanced", open=False):
                    advanced_widgets = [widget(field, editable, studio.paths.fixed.get(field.name))
                                        for field in studio.advanced_fields]
                    if not editable:
                        gr.Markdown("Server-side paths are fixed by whoever started the server.")
            with gr.Column(scale=1):
                with gr.Row():
                    draft_button = gr.Button("Draft (geometric, seconds)", variant="primary", elem_id="draft")
                    render_button = gr.Button("Render with diffusion", interactive=weights_configured or editable,
                                              elem_id="render")
                    guidance_button = gr.Button("Guidance maps (zip)", elem_id="guidance")
                status = gr.Markdown(elem_id="status")
                result = gr.Video(label="Result", interactive=False, elem_id="result", autoplay=True, loop=True)
                crop = gr.Video(label="Face crop", interactive=False, elem_id="crop", loop=True)
                grid = gr.Video(label="Grid: source | driving | depth | normal | render | result",
                                interactive=False, elem_id="grid", loop=True)
                downloads = gr.File(label="Downloads: motion track, guidance maps", file_count="multiple",
                                    interactive=False, elem_id="downloads")

        with gr.Tab("Retarget a still"):
            retarget_fields = form_fields(RetargetConfig)
            with gr.Row():
                with gr.Column():
                    retarget_widgets = [widget(field) for field in retarget_fields]
                    preview_button = gr.Button("Preview", elem_id="retarget_preview")
                still = gr.Image(label="Retargeted portrait", interactive=False, elem_id="still")

        inputs = [face, face_box, *motion_widgets, *advanced_widgets]

        def config(backend, face_value, box, *values):
            count = len(motion_widgets)
            return studio.config(face_value, box, values[:count], values[count:], backend)

        @readable_errors
        def find_faces(image_path):
            if not image_path:
                return None, gr.update(choices=[AUTO_FACE], value=AUTO_FACE)
            picture, choices = studio.faces(image_path)
            return picture, gr.update(choices=choices, value=choices[1] if len(choices) == 2 else AUTO_FACE)

        @readable_errors
        def own_openings(image_path, face_value, box):
            """The retarget sliders start at the portrait's own eye and lip opening."""
            if not image_path:
                return gr.update(), gr.update()
            eyes, lips = studio.openings(image_path, face_value, box)
            return gr.update(value=round(eyes, 3)), gr.update(value=round(lips, 3))

        @readable_errors
        def use_example():
            source, video = studio.example()
            return source, video

        @readable_errors
        def make_draft(image_path, video, motion_file, *values, progress=PROGRESS):
            run = studio.draft(image_path, video, motion_file, config("geometric", *values))
            return _shown(run)

        @readable_errors
        def make_render(image_path, video, current, *values, progress=PROGRESS):
            run = studio.render(image_path, current, video, config("diffusion", *values))
            return _shown(run)

        @readable_errors
        def make_guidance(image_path, current, *values, progress=PROGRESS):
            archive = studio.guidance(image_path, current, config("geometric", *values))
            return [str(current.motion), str(archive)]

        @readable_errors
        def retarget(image_path, face_value, box, *values):
            return studio.retarget(image_path, face_value, box, values)

        outputs = [status, result, crop, grid, downloads, draft_state]
        openings = [retarget_widgets[[f.name for f in retarget_fields].index(name)]
                    for name in ("eye_opening", "lip_opening")]
        portrait.upload(find_faces, [portrait], [faces, face], api_name="faces").then(
            own_openings, [portrait, face, face_box], openings, show_api=False)
        face.change(own_openings, [portrait, face, face_box], openings, api_name="openings")
        portrait.clear(lambda: (None, gr.update(choices=[AUTO_FACE], value=AUTO_FACE)), None, [faces, face],
                       show_api=False)
        example.click(use_example, None, [portrait, driving], api_name="example").then(
            find_faces, [portrait], [faces, face], show_api=False).then(
            own_openings, [portrait, face, face_box], openings, show_api=False)
        draft_button.click(make_draft, [portrait, driving, motion, *inputs], outputs, api_name="draft")
        render_button.click(make_render, [portrait, driving, draft_state, *inputs], outputs, api_name="render")
        guidance_button.click(make_guidance, [portrait, draft_state, *inputs], [downloads], api_name="guidance")
        retarget_inputs = [portrait, face, face_box, *retarget_widgets]
        preview_button.click(retarget, retarget_inputs, [still], api_name="retarget")
        for slider in retarget_widgets:
            slider.release(retarget, retarget_inputs, [still], show_api=False)
    return app


def _shown(run):
    videos = [str(path) if path else None for path in (run.result, run.result_crop, run.grid)]
    return (f"**Done.** {run.summary}", *videos, [str(run.motion)], run)
