//! Hot reload: saving the score (or a file it required) reloads it; a broken edit is
//! reported while the old version keeps playing; requests in flight finish on the
//! version they started with; models stay loaded across reloads.

mod score_support;

use std::path::Path;
use std::time::Duration;

use orchestra::events::EventKind;
use orchestra::score::{Conductor, ReloadEvent, Request};
use score_support::*;
use tokio::sync::broadcast::Receiver;

fn versioned(marker: &str) -> String {
    score_with(&format!(
        "if req.prompt == \"slow\" then orchestra.sleep(0.4) end\nreturn {marker:?}"
    ))
}

async fn next_reload(rx: &mut Receiver<ReloadEvent>) -> ReloadEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a reload within 10 s")
        .expect("the conductor is running")
}

async fn answer(c: &Conductor) -> String {
    c.perform(Request::prompt("which?")).await.unwrap().text
}

async fn watched(test: &str, text: &str) -> (Conductor, std::path::PathBuf) {
    let path = write_score(test, text);
    let c = start(&path).await.unwrap();
    c.watch().await.unwrap();
    (c, path)
}

/// Saves like an editor does: a temporary file renamed over the old one.
fn save_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("lua.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_saved_edit_reloads_the_score() {
    let (c, path) = watched("saved_edit", &versioned("v1")).await;
    let mut rx = c.reloads();
    assert_eq!(answer(&c).await, "v1");
    std::fs::write(&path, versioned("v2")).unwrap();
    let ev = next_reload(&mut rx).await;
    assert!(ev.ok, "{ev:?}");
    assert_eq!(ev.version, 2);
    assert_eq!(ev.reason, "file changed");
    assert_eq!(answer(&c).await, "v2");
    assert_eq!(c.version(), 2);
}

#[tokio::test]
async fn a_broken_edit_is_reported_and_the_old_score_keeps_playing() {
    let (c, path) = watched("broken_edit", &versioned("good 1")).await;
    let mut rx = c.reloads();
    let mut events = c.events().subscribe();

    // A syntax error.
    std::fs::write(&path, format!("{PREAMBLE}local x = = 1\n")).unwrap();
    let ev = next_reload(&mut rx).await;
    assert!(!ev.ok);
    assert_eq!(ev.version, 1);
    let err = ev.error.unwrap();
    assert!(
        err.contains("score.lua:11: unexpected symbol near '='"),
        "file and line: {err}"
    );
    assert_eq!(answer(&c).await, "good 1", "the old version keeps playing");

    // Loads, but is not a score.
    std::fs::write(&path, "return { perform = 42 }").unwrap();
    let ev = next_reload(&mut rx).await;
    assert!(!ev.ok);
    assert!(
        ev.error
            .unwrap()
            .contains("must be a function `perform(req)`")
    );
    assert_eq!(answer(&c).await, "good 1");

    // Fails while loading, with a traceback.
    std::fs::write(
        &path,
        format!("{PREAMBLE}\nband:add(\"x\", {{ model = \"missing.gguf\", section = \"code\" }})\nreturn {{ perform = function() end }}"),
    )
    .unwrap();
    let ev = next_reload(&mut rx).await;
    assert!(!ev.ok);
    let err = ev.error.unwrap();
    assert!(
        err.contains("model file `missing.gguf` does not exist"),
        "{err}"
    );
    assert!(err.contains("stack traceback"), "{err}");
    assert_eq!(answer(&c).await, "good 1");

    // Good again.
    std::fs::write(&path, versioned("good 2")).unwrap();
    let ev = next_reload(&mut rx).await;
    assert!(ev.ok, "{ev:?}");
    assert_eq!(ev.version, 2, "rejected versions do not count");
    assert_eq!(answer(&c).await, "good 2");

    let mut names = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let EventKind::Custom { name, .. } = e.kind {
            names.push(name);
        }
    }
    assert_eq!(
        names,
        [
            "score_reload_failed",
            "score_reload_failed",
            "score_reload_failed",
            "score_reloaded"
        ]
    );
}

#[tokio::test]
async fn requests_in_flight_finish_on_the_version_they_started_with() {
    let (c, path) = watched("in_flight", &versioned("old")).await;
    let mut rx = c.reloads();
    let slow = tokio::spawn({
        let c = c.clone();
        async move { c.perform(Request::prompt("slow")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(&path, versioned("new")).unwrap();
    assert!(next_reload(&mut rx).await.ok);
    assert_eq!(answer(&c).await, "new");
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.text, "old");
    assert_eq!(slow.score_version, 1);
}

#[tokio::test]
async fn editing_a_required_file_reloads_the_score() {
    let dir = test_dir("required_file");
    std::fs::create_dir_all(dir.join("parts")).unwrap();
    std::fs::write(dir.join("parts/tune.lua"), "return \"first tune\"").unwrap();
    let path = dir.join("score.lua");
    std::fs::write(&path, score_with("return require(\"parts.tune\")")).unwrap();
    let c = start(&path).await.unwrap();
    c.watch().await.unwrap();
    let mut rx = c.reloads();
    assert_eq!(answer(&c).await, "first tune");
    std::fs::write(dir.join("parts/tune.lua"), "return \"second tune\"").unwrap();
    let ev = next_reload(&mut rx).await;
    assert!(ev.ok, "{ev:?}");
    assert!(
        ev.changed.iter().any(|p| p.ends_with("parts/tune.lua")),
        "{ev:?}"
    );
    assert_eq!(answer(&c).await, "second tune");
}

#[tokio::test]
async fn saves_by_rename_are_seen_every_time() {
    let (c, path) = watched("rename_save", &versioned("r1")).await;
    let mut rx = c.reloads();
    for i in 2..=4 {
        save_by_rename(&path, &versioned(&format!("r{i}")));
        let ev = next_reload(&mut rx).await;
        assert!(ev.ok, "{ev:?}");
        assert_eq!(answer(&c).await, format!("r{i}"));
    }
}

#[tokio::test]
async fn models_stay_loaded_across_a_reload() {
    let body = |marker: &str| {
        score_with(&format!(
            "local was = band.stage:is_resident(\"coltrane\")\nlocal text = band.coltrane:generate(\"x\")\nreturn {{ was = was, text = text, marker = {marker:?} }}"
        ))
    };
    let (c, path) = watched("models_stay", &body("a")).await;
    let mut rx = c.reloads();
    let first = c.perform(Request::prompt("x")).await.unwrap().data;
    assert_eq!(first["was"], false);
    let mut events = c.events().subscribe();
    std::fs::write(&path, body("b")).unwrap();
    assert!(next_reload(&mut rx).await.ok);
    let second = c.perform(Request::prompt("x")).await.unwrap().data;
    assert_eq!(second["marker"], "b");
    assert_eq!(
        second["was"], true,
        "the reloaded score found its model loaded"
    );
    assert_eq!(second["text"], script("coltrane"));
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e.kind, EventKind::ModelLoading { .. }),
            "no model loads again: {e:?}"
        );
    }
}

#[tokio::test]
async fn a_manual_reload_reports_its_outcome() {
    let path = write_score("manual", &versioned("m1"));
    let c = start(&path).await.unwrap();
    std::fs::write(&path, versioned("m2")).unwrap();
    let ev = c.reload().await.unwrap();
    assert!(ev.ok);
    assert_eq!(ev.reason, "asked");
    assert_eq!(answer(&c).await, "m2");
}

#[tokio::test]
async fn an_instrument_removed_by_a_reload_leaves_the_stage() {
    let with_ella = score_with("return band.ella:generate(\"x\")");
    let (c, path) = watched("removed_instrument", &with_ella).await;
    let mut rx = c.reloads();
    let mut events = c.events().subscribe();
    assert_eq!(
        c.perform(Request::prompt("x")).await.unwrap().text,
        script("ella")
    );
    // The same band without Ella.
    let without = with_ella.replace(
        "for _, m in ipairs(orchestra.rehearsal_band()) do",
        "for _, m in ipairs(orchestra.rehearsal_band()) do\n  if m.name == \"ella\" then goto continue end",
    )
    .replace("  })\nend", "  })\n  ::continue::\nend")
    .replace("return band.ella:generate(\"x\")", "return tostring(band:has(\"ella\"))");
    std::fs::write(&path, without).unwrap();
    assert!(next_reload(&mut rx).await.ok);
    assert_eq!(answer(&c).await, "false");
    let mut evicted = false;
    while let Ok(e) = events.try_recv() {
        if let EventKind::ModelEvicted { model, reason } = e.kind {
            evicted |= model == "ella" && reason.contains("removed");
        }
    }
    assert!(
        evicted,
        "ella's model left the stage when the score dropped her"
    );
}

/// A score with one instrument, `solo`, playing the rehearsal member `member`'s file;
/// `tail` goes after the band (a broken tail makes the version fail to load).
fn solo_on(member: &str, tail: &str) -> String {
    format!(
        r#"local band = orchestra.band {{ memory = "2GiB" }}
band:add("solo", {{
  model = orchestra.rehearsal_model({member:?}),
  section = "code",
  context = 512,
  slots = 2,
  sampling = {{ temperature = 0 }},
}})
{tail}
return {{ perform = function(req) return band.solo:generate("x") end }}
"#
    )
}

fn solo_status(c: &Conductor) -> orchestra::stage::ModelStatus {
    c.stage_status()
        .models
        .into_iter()
        .find(|m| m.name == "solo")
        .expect("solo is on the stage")
}

#[tokio::test]
async fn a_broken_version_leaves_the_stage_untouched() {
    let path = write_score("broken_leaves_stage", &solo_on("coltrane", ""));
    let c = start(&path).await.unwrap();
    assert_eq!(answer(&c).await, script("coltrane"));
    let before = solo_status(&c);
    assert!(before.resident);
    let mut events = c.events().subscribe();
    // Points `solo` at another file, then fails: the stage must not follow it.
    std::fs::write(
        &path,
        solo_on("ella", "band:add(\"late\", { model = orchestra.rehearsal_model(\"monk\"), section = \"code\" })\nerror(\"not finished\")"),
    )
    .unwrap();
    let ev = c.reload().await.unwrap();
    assert!(!ev.ok, "{ev:?}");
    let after = solo_status(&c);
    assert_eq!(after.path, before.path, "the old version's file stays");
    assert!(after.resident, "its model stays loaded");
    assert!(
        c.stage_status().models.iter().all(|m| m.name != "late"),
        "an instrument only the broken version named is not on the stage"
    );
    assert_eq!(answer(&c).await, script("coltrane"));
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(
                e.kind,
                EventKind::ModelEvicted { .. } | EventKind::ModelLoading { .. }
            ),
            "the stage changed for a rejected version: {e:?}"
        );
    }
}

#[tokio::test]
async fn an_instrument_whose_file_changed_plays_the_new_file_after_a_reload() {
    let path = write_score("file_changed", &solo_on("coltrane", ""));
    let c = start(&path).await.unwrap();
    assert_eq!(answer(&c).await, script("coltrane"));
    std::fs::write(&path, solo_on("ella", "")).unwrap();
    let ev = c.reload().await.unwrap();
    assert!(ev.ok, "{ev:?}");
    assert_eq!(answer(&c).await, script("ella"), "the new file plays");
    let status = solo_status(&c);
    assert!(
        status.path.to_string_lossy().contains("ella"),
        "{}",
        status.path.display()
    );
    // Only the new copy is counted.
    assert_eq!(c.stage_status().used, status.footprint_bytes.unwrap());
}
