"""Single-file checkpoints: nothing may keep the checkpoint's memory map alive, and float position ids are fixed."""

from types import SimpleNamespace

import torch

from lib_lora_train.hosts.diffusers_host import _detach_from_checkpoint_file


def test_buffers_stop_sharing_the_checkpoint_storage_and_position_ids_become_integers():
    whole_file = torch.zeros(1_000_000, dtype=torch.float16)  # stands in for the mapped checkpoint
    text_encoder = torch.nn.Module()
    text_encoder.embeddings = torch.nn.Module()
    text_encoder.embeddings.register_buffer("position_ids", whole_file[:77].view(1, 77))
    text_encoder.embeddings.position_ids.copy_(torch.arange(77, dtype=torch.float16).view(1, 77))
    unet = torch.nn.Module()
    unet.register_buffer("scale", whole_file[100:104])
    pipe = SimpleNamespace(components={"text_encoder": text_encoder, "unet": unet, "tokenizer": object()})

    _detach_from_checkpoint_file(pipe)

    ids = text_encoder.embeddings.position_ids
    assert ids.dtype == torch.long
    assert ids.tolist() == [list(range(77))]
    for buffer in (ids, unet.scale):
        assert buffer.untyped_storage().data_ptr() != whole_file.untyped_storage().data_ptr()
        assert buffer.untyped_storage().nbytes() == buffer.numel() * buffer.element_size()
