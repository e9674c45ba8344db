"""Voices: clone jobs (``POST /voice-clone``) and the saved-voice library."""
from __future__ import annotations

from flask import Blueprint, request, send_file

from chatterbox import jobs
from chatterbox.schemas.requests import CloneForm, VoiceImportForm, VoicePatch
from chatterbox.voices import VoiceLibrary, clone_request, prepare_reference

from .auth import caller
from .common import error_response, form_files, keep_upload, links, services, upload_path

bp = Blueprint("voices", __name__)

UPLOAD_ALIASES = {"audio": "file"}  # the name some clients give the recording


def library() -> VoiceLibrary:
    return VoiceLibrary(services().settings.voices_dir)


@bp.post("/voice-clone")
def clone():
    svc = services()
    files = form_files(UPLOAD_ALIASES)
    if "file" not in files:
        return error_response(400, "send the recording as a multipart file field named 'file'", "missing_file", "file")
    if svc.engine_name != "chatterbox":
        return error_response(400, f"voice cloning needs the chatterbox engine; this system runs {svc.engine_name}",
                              "cloning_unavailable", "engine")
    form = CloneForm.check_form(request.form, files)
    req = clone_request(form.name, form.description, form.tags, form.exaggeration, library(), owner=caller().id)
    prepare_reference(form.file)  # refuse bad recordings now, before any model work
    job_id = jobs.new_job_id()
    svc.store.create(job_id, text=req["name"], voice="", format="wav", engine=svc.engine_name, source="rest",
                     kind="clone", params={**req, "upload": str(upload_path(svc.settings, job_id))},
                     owner=caller().id)
    keep_upload(job_id, form.file)
    from tasks import clone_voice

    clone_voice.apply_async(kwargs={"job_id": job_id, "attempt": 1}, task_id=job_id)
    return {"job_id": job_id, "status": "queued", **links(job_id)}, 202


@bp.get("/saved-voices")
def saved_voices():
    return {"voices": [v.public() for v in library().list(caller())]}


@bp.get("/voices/<voice_id>")
def get_voice(voice_id: str):
    for voice in services().engine.voices(caller()):
        if voice["id"] == voice_id and voice.get("builtin"):
            return voice
    return library().get(voice_id, caller()).public()


@bp.patch("/voices/<voice_id>")
def update_voice(voice_id: str):
    patch = VoicePatch.check(request.get_json(silent=True))
    return library().update(voice_id, caller(), **patch.model_dump(exclude_unset=True)).public()


@bp.delete("/voices/<voice_id>")
def delete_voice(voice_id: str):
    if any(v["id"] == voice_id and v.get("builtin") for v in services().engine.voices(caller())):
        return error_response(400, f"{voice_id!r} is a built-in voice and cannot be deleted", "builtin_voice")
    library().delete(voice_id, caller())
    return {"id": voice_id, "deleted": True}


@bp.get("/voices/<voice_id>/sample")
def voice_sample(voice_id: str):
    return send_file(library().file(voice_id, "sample.wav", caller()), mimetype="audio/wav")


@bp.get("/voices/<voice_id>/export")
def export_voice(voice_id: str):
    data = library().export(voice_id, caller())
    return data, 200, {"Content-Type": "application/octet-stream",
                       "Content-Disposition": f'attachment; filename="{voice_id}.voice"'}


@bp.post("/voices/import")
def import_voice():
    data, name = b"", None
    if request.mimetype == "multipart/form-data":
        files = form_files(UPLOAD_ALIASES)
        if "file" in files:
            form = VoiceImportForm.check_form(request.form, files)
            data, name = form.file, form.name
    else:  # the file as the body itself
        data = request.get_data()
    if not data:
        return error_response(400, "send an exported voice file", "missing_file", "file")
    voice = library().import_(data, owner=caller().id, name=request.args.get("name") or name)
    return voice.public(), 201
