// Train Tools: show the WebUI's own progress bar (percent, ETA, textinfo) above the training status while a job runs.
// The WebUI loads every extension's javascript/*.js; randomId and requestProgress come from its progressbar.js.
function loraTrainToolsStart() {
    var args = Array.from(arguments);
    var id = randomId();
    requestProgress(id, gradioApp().getElementById('lora_train_tools_status'), null, function() {});
    args[0] = id; // the hidden task-id input: the job reports under this id to /internal/progress
    return args;
}
