//! Turns token pieces (raw bytes that may end mid-character) into streamed text:
//! never splits a UTF-8 character, and holds back text that could be the start of a
//! stop string so a stop string never reaches the caller.

/// What [`TextStream::push`] produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Text safe to show now.
    pub text: String,
    /// A stop string was found; generation must end.
    pub stopped: bool,
}

/// Incremental decoder of one generation's output.
#[derive(Debug, Default)]
pub struct TextStream {
    /// Bytes of an incomplete UTF-8 character.
    pending: Vec<u8>,
    /// All complete text so far (without anything after a stop string).
    text: String,
    /// How much of `text` was handed out.
    emitted: usize,
    stop: Vec<String>,
}

impl TextStream {
    pub fn new(stop: Vec<String>) -> Self {
        Self {
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Self::default()
        }
    }

    /// The whole text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Feed the bytes of one token.
    pub fn push(&mut self, bytes: &[u8]) -> Pushed {
        self.pending.extend_from_slice(bytes);
        let search_from = self.text.len().saturating_sub(self.longest_stop());
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    self.text.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY of the unwrap: `valid_up_to` marks a valid prefix.
                    self.text
                        .push_str(std::str::from_utf8(&self.pending[..valid]).unwrap());
                    match e.error_len() {
                        // Incomplete character at the end: wait for the next token.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                        // Invalid bytes: show the replacement character, go on.
                        Some(bad) => {
                            self.text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
        if let Some(at) = self.find_stop(search_from) {
            self.text.truncate(at);
            self.pending.clear();
            let text = self.take(at);
            return Pushed {
                text,
                stopped: true,
            };
        }
        let safe = self.text.len() - self.held_back();
        Pushed {
            text: self.take(safe),
            stopped: false,
        }
    }

    /// Everything not yet handed out (at the end of generation).
    pub fn finish(&mut self) -> String {
        if !self.pending.is_empty() {
            self.text.push_str(&String::from_utf8_lossy(&self.pending));
            self.pending.clear();
        }
        self.take(self.text.len())
    }

    fn take(&mut self, upto: usize) -> String {
        if upto <= self.emitted {
            return String::new();
        }
        let out = self.text[self.emitted..upto].to_owned();
        self.emitted = upto;
        out
    }

    fn longest_stop(&self) -> usize {
        self.stop.iter().map(String::len).max().unwrap_or(0)
    }

    fn find_stop(&self, from: usize) -> Option<usize> {
        let from = floor_char_boundary(&self.text, from);
        self.stop
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min()
    }

    /// Bytes at the end of the text that could begin a stop string.
    fn held_back(&self) -> usize {
        let tail = &self.text[self.emitted..];
        let mut held = 0;
        for stop in &self.stop {
            for k in (1..stop.len().min(tail.len() + 1)).rev() {
                if k <= held {
                    break;
                }
                if stop.is_char_boundary(k) && tail.ends_with(&stop[..k]) {
                    held = k;
                    break;
                }
            }
        }
        held
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stop: &[&str], pieces: &[&[u8]]) -> (Vec<String>, bool, String) {
        let mut s = TextStream::new(stop.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        let mut stopped = false;
        for p in pieces {
            let r = s.push(p);
            out.push(r.text);
            if r.stopped {
                stopped = true;
                break;
            }
        }
        if !stopped {
            out.push(s.finish());
        }
        (out, stopped, s.text().to_owned())
    }

    #[test]
    fn multibyte_characters_split_across_tokens_are_never_split_in_output() {
        let snow = "☃".as_bytes(); // 3 bytes
        let (out, _, text) = feed(&[], &[b"a", &snow[..1], &snow[1..2], &snow[2..], b"b"]);
        assert_eq!(out, vec!["a", "", "", "☃", "b", ""]);
        assert_eq!(text, "a☃b");
    }

    #[test]
    fn stop_string_across_tokens_is_held_back_and_cut() {
        let (out, stopped, text) = feed(&["END"], &[b"hello E", b"N", b"D more"]);
        assert!(stopped);
        assert_eq!(out.concat(), "hello ");
        assert_eq!(text, "hello ");
    }

    #[test]
    fn held_back_prefix_is_released_when_it_does_not_complete() {
        let (out, stopped, _) = feed(&["END"], &[b"a E", b"x"]);
        assert!(!stopped);
        assert_eq!(out[0], "a ");
        assert_eq!(out.concat(), "a Ex");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (out, _, _) = feed(&[], &[b"a\xffb"]);
        assert_eq!(out.concat(), "a\u{fffd}b");
    }

    #[test]
    fn earliest_of_several_stop_strings_wins() {
        let (out, stopped, _) = feed(&["zz", "b"], &[b"abzz"]);
        assert!(stopped);
        assert_eq!(out.concat(), "a");
    }
}
