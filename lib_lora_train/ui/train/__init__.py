"""The Train Tools tab: layout, actions, the step calculator and presets, the job runner and the train API."""
