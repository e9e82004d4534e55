// LoRA Train Tools — Dataset Tag Editor: keyboard shortcuts and tag autocomplete.
// The WebUI loads every javascript/*.js of an extension; everything here is scoped to the tab whose DOM id is
// #tab_lora_train_tag_editor (registered with elem_id "lora_train_tag_editor") and does nothing elsewhere.
(function () {
    "use strict";

    const TAB = "tab_lora_train_tag_editor";
    const P = "lora_train_tag_editor";
    // text boxes that get tag autocomplete from the dataset's tags
    const COMPLETE_IDS = ["caption", "quick_add", "quick_remove", "include", "exclude"].map((s) => `${P}_${s}`);
    const MAX_SUGGESTIONS = 12;

    function root() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function tabVisible() {
        const tab = root().getElementById(TAB);
        return !!tab && tab.offsetParent !== null;
    }

    function click(id) {
        const button = root().getElementById(`${P}_${id}`);
        if (button) button.click();
    }

    function focusBox(id) {
        const box = root().querySelector(`#${P}_${id} textarea, #${P}_${id} input`);
        if (box) {
            box.focus();
            box.select();
        }
    }

    // Alt+key so that typing in a caption is never taken over; the WebUI itself uses Ctrl+Enter / Esc.
    const SHORTCUTS = {
        ArrowRight: () => click("next"),
        ArrowLeft: () => click("prev"),
        a: () => focusBox("quick_add"),
        r: () => focusBox("quick_remove"),
        z: () => click("undo"),
        y: () => click("redo"),
        s: () => click("save"),
    };

    function onKeyDown(event) {
        if (!event.altKey || event.ctrlKey || event.metaKey || !tabVisible()) return;
        const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
        const action = SHORTCUTS[key];
        if (!action) return;
        event.preventDefault();
        action();
    }

    // --- autocomplete ------------------------------------------------------------------------------------------

    let cachedText = null;
    let cachedTags = [];

    function datasetTags() {
        const box = root().querySelector(`#${P}_tags_json textarea`);
        const text = box ? box.value : "[]";
        if (text !== cachedText) {
            cachedText = text;
            try {
                cachedTags = JSON.parse(text || "[]");
            } catch (e) {
                cachedTags = [];
            }
        }
        return cachedTags;
    }

    // the tag being typed: from the comma before the cursor to the cursor
    function currentToken(box) {
        const before = box.value.slice(0, box.selectionStart);
        const start = before.lastIndexOf(",") + 1;
        return { start: start, text: before.slice(start).trim() };
    }

    function matches(token, present) {
        const needle = token.toLowerCase();
        const prefix = [];
        const inside = [];
        for (const tag of datasetTags()) {
            if (present.has(tag)) continue;
            const lower = tag.toLowerCase();
            if (lower.startsWith(needle)) prefix.push(tag);
            else if (lower.includes(needle)) inside.push(tag);
            if (prefix.length >= MAX_SUGGESTIONS) break;
        }
        return prefix.concat(inside).slice(0, MAX_SUGGESTIONS);
    }

    const popup = document.createElement("ul");
    popup.className = "lora-train-tag-autocomplete";
    popup.style.display = "none";
    let popupBox = null;
    let active = 0;
    let accepting = false; // our own input event, sent after accepting a suggestion

    function hidePopup() {
        popup.style.display = "none";
        popupBox = null;
    }

    function showPopup(box, items) {
        popup.innerHTML = "";
        items.forEach((tag, i) => {
            const li = document.createElement("li");
            li.textContent = tag;
            if (i === active) li.className = "active";
            li.addEventListener("mousedown", (event) => {
                event.preventDefault();
                accept(box, tag);
            });
            popup.appendChild(li);
        });
        const rect = box.getBoundingClientRect();
        popup.style.left = `${rect.left + window.scrollX}px`;
        popup.style.top = `${rect.bottom + window.scrollY}px`;
        popup.style.minWidth = `${Math.min(rect.width, 320)}px`;
        popup.style.display = "block";
        popupBox = box;
    }

    function accept(box, tag) {
        const token = currentToken(box);
        const after = box.value.slice(box.selectionStart);
        const lead = token.start > 0 ? " " : "";
        const head = box.value.slice(0, token.start) + lead + tag;
        // one tag per quick add/remove box; a caption or a filter goes on with the next tag
        const separator = box.closest(`#${P}_quick_add, #${P}_quick_remove`) ? "" : ", ";
        box.value = head + (after.trim().startsWith(",") ? "" : separator) + after;
        box.selectionStart = box.selectionEnd = head.length + separator.length;
        // gradio 3 reads a textbox's value from its input event (as the WebUI's updateInput does)
        accepting = true;
        box.dispatchEvent(new Event("input", { bubbles: true }));
        accepting = false;
        hidePopup();
    }

    function onInput(event) {
        const box = event.target;
        if (accepting || !isCompleted(box)) return;
        const token = currentToken(box);
        if (token.text.length < 1) return hidePopup();
        const present = new Set(box.value.split(",").map((t) => t.trim()));
        const items = matches(token.text, present);
        active = 0;
        if (items.length) showPopup(box, items);
        else hidePopup();
    }

    function onBoxKey(event) {
        if (popupBox !== event.target || popup.style.display === "none") return;
        const items = Array.from(popup.children);
        if (event.key === "ArrowDown" || event.key === "ArrowUp") {
            event.preventDefault();
            active = (active + (event.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
            items.forEach((li, i) => (li.className = i === active ? "active" : ""));
        } else if (event.key === "Tab" || (event.key === "Enter" && !event.shiftKey)) {
            event.preventDefault();
            event.stopPropagation();
            accept(event.target, items[active].textContent);
        } else if (event.key === "Escape") {
            hidePopup();
        }
    }

    function isCompleted(box) {
        return (
            box && (box.tagName === "TEXTAREA" || box.tagName === "INPUT") && COMPLETE_IDS.some((id) => box.closest(`#${id}`))
        );
    }

    function setup() {
        if (setup.done) return;
        setup.done = true;
        document.body.appendChild(popup);
        document.addEventListener("keydown", onKeyDown);
        // capture phase: our Enter/Tab must win over gradio's submit-on-Enter while the list is open
        document.addEventListener("keydown", onBoxKey, true);
        document.addEventListener("input", onInput, true);
        document.addEventListener("focusout", (event) => {
            if (event.target === popupBox) hidePopup();
        });
    }

    if (typeof onUiLoaded === "function") onUiLoaded(setup);
    else document.addEventListener("DOMContentLoaded", setup);
})();
