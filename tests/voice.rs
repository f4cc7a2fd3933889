//! Voice commands: transcripts matched to intents (a table), `POST /api/voice` carrying
//! them out on a real server, and once end to end through `orchestra voice --say`,
//! espeak-ng speaking the reply into a WAV file that sox measures as speech.

mod serve_support;

use std::time::Duration;

use serde_json::{Value, json};

use orchestra::server::ServeConfig;
use orchestra::voice::{Intent, Vocabulary, parse};
use serve_support::{client, runtime, scratch, serve};

fn vocab() -> Vocabulary {
    Vocabulary {
        instruments: ["coltrane", "ella", "monk", "mingus", "drone"]
            .map(String::from)
            .to_vec(),
        sections: ["code", "creative", "analysis", "review"]
            .map(String::from)
            .to_vec(),
    }
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn transcripts_match_their_intents() {
    use Intent::*;
    let cases: Vec<(&str, Intent)> = vec![
        ("status", Status),
        ("How's the band doing?", Status),
        ("give me a status report", Status),
        ("who's soloing?", Soloist),
        ("Who is playing right now", Soloist),
        ("how much memory is left?", Memory),
        ("is there room for another model", Memory),
        (
            "who leads the code section?",
            SectionLead { section: s("code") },
        ),
        (
            "what's the creative lead",
            SectionLead {
                section: s("creative"),
            },
        ),
        (
            "Who is the leader of analysis?",
            SectionLead {
                section: s("analysis"),
            },
        ),
        (
            "make drone the analysis lead",
            SwitchLead {
                section: s("analysis"),
                instrument: s("drone"),
            },
        ),
        (
            "switch the code lead to Coltrane",
            SwitchLead {
                section: s("code"),
                instrument: s("coltrane"),
            },
        ),
        (
            "let Monk lead analysis",
            SwitchLead {
                section: s("analysis"),
                instrument: s("monk"),
            },
        ),
        (
            "pin coltrane",
            Pin {
                instrument: s("coltrane"),
            },
        ),
        (
            "keep Ella on stage",
            Pin {
                instrument: s("ella"),
            },
        ),
        (
            "unpin ella",
            Unpin {
                instrument: s("ella"),
            },
        ),
        (
            "unload monk",
            Unload {
                instrument: s("monk"),
            },
        ),
        (
            "send Mingus off stage",
            Unload {
                instrument: s("mingus"),
            },
        ),
        (
            "start a jam on Why is the sky blue?",
            Jam {
                prompt: s("Why is the sky blue?"),
            },
        ),
        (
            "let's jam about how to stop a thread",
            Jam {
                prompt: s("how to stop a thread"),
            },
        ),
        ("jam", Jam { prompt: s("") }),
        ("stop", Stop),
        ("Cancel that!", Stop),
        ("shut up", Stop),
        ("play me a song", Unknown),
        ("", Unknown),
        ("what's the weather", Unknown),
    ];
    let v = vocab();
    for (text, want) in cases {
        assert_eq!(parse(text, &v), want, "{text:?}");
    }
}

async fn say(url: &str, text: &str) -> Value {
    let res = client()
        .post(format!("{url}/api/voice"))
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{text}");
    res.json().await.unwrap()
}

#[test]
fn the_voice_endpoint_answers_and_acts() {
    runtime().block_on(async {
        let s = serve("voice", ServeConfig::default()).await;
        let base = format!("http://{}", s.addr);

        let v = say(&base, "who's soloing?").await;
        assert_eq!(v["intent"], "soloist");
        assert_eq!(v["reply"], "Nobody is soloing right now.");
        assert!(v["action"].is_null());

        let v = say(&base, "who leads analysis?").await;
        assert_eq!(v["intent"], "section_lead");
        assert_eq!(
            v["reply"],
            "Monk leads the analysis section, with Drone standing by."
        );

        let v = say(&base, "make drone the analysis lead").await;
        assert_eq!(v["intent"], "switch_lead");
        assert_eq!(
            v["args"],
            json!({ "section": "analysis", "instrument": "drone" })
        );
        assert_eq!(v["action"], "set_lead analysis=drone");
        assert_eq!(
            v["reply"],
            "Drone now leads the analysis section, taking over from Monk."
        );
        let v = say(&base, "who leads analysis?").await;
        assert_eq!(
            v["reply"],
            "Drone leads the analysis section, with Monk standing by."
        );

        let v = say(&base, "make ella the code lead").await;
        assert_eq!(v["reply"], "Ella plays in the creative section, not code.");
        assert!(v["action"].is_null());

        let v = say(&base, "unload monk").await;
        assert_eq!(v["reply"], "Monk is not on stage.");
        let v = say(&base, "pin coltrane").await;
        assert_eq!(v["action"], "pin coltrane");
        // Pinning brings the instrument on stage, and keeps it there.
        let mut on_stage = false;
        for _ in 0..100 {
            let st = s.conductor.stage_status();
            let m = st.models.iter().find(|m| m.name == "coltrane").unwrap();
            assert!(m.pinned);
            if m.resident {
                on_stage = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(on_stage, "a pinned instrument walks on stage");
        let v = say(&base, "how much memory is left?").await;
        assert_eq!(v["intent"], "memory");
        let reply = v["reply"].as_str().unwrap();
        assert!(
            reply.contains("free of 2.0 GiB; Coltrane is on stage."),
            "{reply}"
        );
        let v = say(&base, "status").await;
        let reply = v["reply"].as_str().unwrap();
        assert!(reply.starts_with("one instrument on stage"), "{reply}");

        // A jam runs in the background; its answer comes on the event bus.
        let mut events = s.conductor.events().subscribe();
        let v = say(&base, "start a jam on why is the sky blue").await;
        assert_eq!(v["intent"], "jam");
        assert_eq!(v["args"]["prompt"], "why is the sky blue");
        let jammed = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                let e = events.recv().await.unwrap();
                if let orchestra::events::EventKind::Custom { name, data } = &e.kind
                    && name == "voice_jam"
                {
                    return data.clone();
                }
            }
        })
        .await
        .expect("the jam ends");
        assert!(jammed["error"].is_null(), "{jammed}");
        assert!(!jammed["text"].as_str().unwrap().is_empty(), "{jammed}");

        // Stop: a long generation in flight ends at once.
        let held = tokio::spawn({
            let url = s.url.clone();
            async move {
                client()
                    .post(format!("{url}/chat/completions"))
                    .json(
                        &json!({"model": "orchestra", "stream": true, "max_tokens": 6000,
                        "messages": [{"role": "user", "content": "hold on"}]}),
                    )
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            }
        });
        while s.state.admission.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let v = say(&base, "stop!").await;
        assert_eq!(v["intent"], "stop");
        assert_eq!(v["reply"], "Stopped the request that was playing.");
        let body = tokio::time::timeout(Duration::from_secs(30), held)
            .await
            .expect("the stopped request ends")
            .unwrap();
        assert!(body.contains("stopped by a voice command"), "{body}");

        let v = say(&base, "play me a song").await;
        assert_eq!(v["intent"], "unknown");
        let reply = v["reply"].as_str().unwrap();
        for w in [
            "status", "soloing", "memory", "lead", "pin", "unload", "jam", "stop",
        ] {
            assert!(reply.contains(w), "{w}: {reply}");
        }
    });
}

#[test]
fn the_voice_endpoint_needs_the_key_when_the_server_has_one() {
    runtime().block_on(async {
        let s = serve(
            "voice-key",
            ServeConfig {
                api_key: Some("k".into()),
                ..ServeConfig::default()
            },
        )
        .await;
        let res = client()
            .post(format!("http://{}/api/voice", s.addr))
            .json(&json!({ "text": "status" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    });
}

/// `sox FILE -n stat`: (length in seconds, RMS amplitude).
fn measure(wav: &std::path::Path) -> (f64, f64) {
    let out = std::process::Command::new("sox")
        .arg(wav)
        .args(["-n", "stat"])
        .output()
        .expect("sox runs: apt-get install sox");
    let text = String::from_utf8_lossy(&out.stderr);
    let field = |label: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(label))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("`sox stat` has no `{label}`: {text}"))
    };
    (field("Length (seconds)"), field("RMS     amplitude"))
}

#[test]
#[ignore = "needs espeak-ng and sox: apt-get install espeak-ng sox"]
fn a_spoken_reply_is_speech_not_silence() {
    runtime().block_on(async {
        let s = serve("voice-say", ServeConfig::default()).await;
        let wav = scratch().join("reply.wav");
        let _ = std::fs::remove_file(&wav);
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
            .args(["voice", "who leads the code section?", "--url", &s.url])
            .arg("--say")
            .arg(format!("espeak-ng -w {} {{}}", wav.display()))
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.trim(), "Coltrane leads the code section.");
        assert!(
            wav.is_file(),
            "espeak-ng wrote no WAV: apt-get install espeak-ng"
        );
        let (seconds, rms) = measure(&wav);
        assert!(seconds > 0.5, "{seconds} s");
        // Digital silence measures 0; quiet speech from espeak-ng is about 0.1.
        assert!(rms > 0.02, "RMS amplitude {rms}");
    });
}
