"""Our options in the host's Settings tab (section "LoRA Train Tools"), from the one list in ``ui.options``; A1111 and
Forge share ``shared.OptionInfo``, and gradio 4 takes the same component arguments here."""

from __future__ import annotations

from lib_lora_train.ui.options import OPTIONS, SECTION


def register_settings() -> None:
    """``on_ui_settings`` callback."""
    import gradio as gr
    from modules import shared

    for option in OPTIONS.values():
        component, args = None, None
        if option.kind == "radio":
            component, args = gr.Radio, {"choices": option.choices()}
        elif option.kind == "dropdown":
            # a callable: the Settings page calls it again on each refresh; no allow_custom_value (gradio 3.41
            # rejects it in Dropdown.update, the Error toast that v1.10's Settings showed on every page load)
            component, args = gr.Dropdown, (lambda choices=option.choices: {"choices": choices()})
        elif option.kind == "slider":
            component, args = gr.Slider, {"minimum": option.minimum, "maximum": option.maximum, "step": option.step}
        info = shared.OptionInfo(option.default, option.label, component, args, section=SECTION)
        shared.opts.add_option(option.key, info.info(option.info) if option.info else info)
