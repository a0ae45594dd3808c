"""flask backup / flask restore: a live SQLite database and its uploaded images, copied and brought back."""

from __future__ import annotations

import re
import shutil

from chatapp.extensions import db
from tests.clients import stored, wait_until
from tests.conftest import Chat
from tests.fake_upstream import Reply
from tests.sse import collect
from tests.test_images import picture, send_with_images


def test_backup_while_answering_then_restore_finds_every_conversation_and_image(make_app, upstream, tmp_path) -> None:  # noqa: ANN001
    app = make_app()
    chat = Chat(app)
    pictures = {}
    for i in range(3):
        data = picture(size=(20 + i, 10 + i))
        response = send_with_images(chat, f"picture number {i}", data)
        assert response.status_code == 303
        found = re.search(r"/c/(\d+)#message-(\d+)", response.headers["Location"])
        conversation_id, answer_id = int(found.group(1)), int(found.group(2))
        assert chat.wait(answer_id).status == "complete"
        pictures[conversation_id] = (f"picture number {i}", data)

    upstream.script(Reply(tokens=[f" t{i}" for i in range(150)], delay=0.02))
    streaming_conversation, streaming_answer = chat.start("a long answer, backed up halfway")
    stream = chat.events(streaming_answer)
    page, _ = collect(stream, stop_after=2)  # it is streaming now
    flushed = wait_until(lambda: stored(app, streaming_answer).content, "some of it is flushed")
    result = app.test_cli_runner().invoke(args=["backup", str(tmp_path / "backup")])
    assert result.exit_code == 0, result.output
    assert "Backed up 4 conversations and 3 files" in result.output
    _, events = collect(stream, page=page)  # the viewer reads on to the end
    assert events[-1].event == "done" and chat.wait(streaming_answer).status == "complete"  # undisturbed

    again = app.test_cli_runner().invoke(args=["backup", str(tmp_path / "backup")])
    assert again.exit_code != 0 and "not empty" in again.output  # an earlier backup is never overwritten

    # The disk is wiped: the database and every uploaded file are gone.
    app.extensions["chatapp.generator"].close()
    with app.app_context():
        db.engine.dispose()
    for path in tmp_path.glob("chat.sqlite3*"):
        path.unlink()
    shutil.rmtree(tmp_path / "uploads")

    fresh = make_app()
    result = fresh.test_cli_runner().invoke(args=["restore", str(tmp_path / "backup")])
    assert result.exit_code == 0, result.output
    assert "Restored 4 conversations and 3 files" in result.output
    refused = fresh.test_cli_runner().invoke(args=["restore", str(tmp_path / "backup")])
    assert refused.exit_code != 0 and "--force" in refused.output  # it holds data now
    forced = fresh.test_cli_runner().invoke(args=["restore", str(tmp_path / "backup"), "--force"])
    assert forced.exit_code == 0, forced.output

    # The app starts on the restored data (the answer caught mid-stream has no generator: interrupted).
    restored = Chat(make_app(STALE_AFTER=0.001))
    restored.client.set_cookie("session", chat.client.get_cookie("session").value)
    listing = restored.get("/").get_data(as_text=True)
    for conversation_id, (content, data) in pictures.items():
        assert f"/c/{conversation_id}" in listing
        page = restored.get(f"/c/{conversation_id}").get_data(as_text=True)
        assert content in page
        [image_id] = re.findall(r'<img src="/images/(\d+)"', page)
        served = restored.client.get(f"/images/{image_id}")
        assert served.status_code == 200 and served.data == data
        served.close()

    page = restored.get(f"/c/{streaming_conversation}").get_data(as_text=True)
    answer = re.search(rf'id="message-{streaming_answer}" class="message assistant" data-status="(\w+)"', page)
    assert answer.group(1) == "interrupted"
    text = stored(restored.app, streaming_answer).content  # what was flushed when the backup was taken
    assert text.startswith(flushed) and len(text) < len("".join(f" t{i}" for i in range(150)))
    assert text.strip() in page and f"/messages/{streaming_answer}/continue" in page  # its text so far, and Continue


def test_restore_refuses_a_folder_that_is_not_a_backup(make_app, tmp_path) -> None:  # noqa: ANN001
    app = make_app()
    result = app.test_cli_runner().invoke(args=["restore", str(tmp_path)])
    assert result.exit_code != 0 and "does not exist: give the folder that flask backup wrote" in result.output
