//! SentencePiece-style vocabularies (tokenizer model `llama`) for synthetic models:
//! special tokens, the 256 byte tokens, `▁`, printable ASCII and common English
//! words, plus caller pieces. Owns token strings and ids, not weights.

use std::collections::HashMap;

use super::error::SynthError;
use super::gguf::GgufWriter;

/// SentencePiece's visible space: token strings use it where the text has a space.
pub const SPACE: char = '\u{2581}';

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum TokenKind {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabToken {
    pub text: String,
    /// SentencePiece merge priority: llama.cpp merges the highest-scoring pair first.
    pub score: f32,
    pub kind: TokenKind,
}

/// A vocabulary with unique token strings (llama.cpp asserts on duplicates).
#[derive(Debug, Clone)]
pub struct Vocab {
    tokens: Vec<VocabToken>,
    index: HashMap<String, u32>,
    /// Score for the next normal piece: decreasing, so earlier (commoner) pieces win
    /// merges, as in a trained SentencePiece model.
    next_score: f32,
}

/// Common English words (space-separated), as `▁word` pieces with all their prefixes
/// so SentencePiece merges reach them (`▁t` → `▁th` → `▁the`).
const COMMON_WORDS: &str = "\
    the be to of and a in that have I it for not on with he as you do at this but \
    his by from they we say her she or an will my one all would there their what so \
    up out if about who get which go me when make can like time no just him know \
    take people into year your good some could them see other than then now look \
    only come its over think also back after use two how our work first well way \
    even new want because any these give day most us is are was were been has had \
    did said very more here where why each many much should may might must let model \
    music band note notes song play code test data file line function value return \
    error result true false string number list text word name type example question \
    answer review analysis story write read run start stop end hello world thank \
    thanks please yes sure great better best small large long short high low fast \
    slow old young right left same different important able call find tell ask seem \
    feel try leave put mean keep begin help show hear turn move live believe bring \
    happen provide sit stand lose pay meet include continue set learn change lead \
    understand watch follow create speak allow add spend grow open walk win offer \
    remember love consider appear buy wait serve dance send expect build stay fall cut \
    reach listen remain night light sound blue city room house water point hand part \
    place case week system program question problem fact idea rhythm melody jazz \
    solo piano bass drum drums swing tune loop input output memory token tokens \
    simple clear correct every never always again still while before through under \
    between";

/// Words that commonly start a sentence (space-separated), as capitalised pieces.
const CAPITALISED: &str = "\
    The This It In A We You He She They What How Why When If And But So Hello Yes No \
    There Here";

impl Default for Vocab {
    fn default() -> Self {
        Self::new()
    }
}

impl Vocab {
    /// `<unk>`: unknown text.
    pub const UNK: u32 = 0;
    /// `<s>`: beginning of sequence.
    pub const BOS: u32 = 1;
    /// `</s>`: end of sequence.
    pub const EOS: u32 = 2;
    /// `<|im_start|>`: ChatML turn start.
    pub const IM_START: u32 = 3;
    /// `<|im_end|>`: ChatML turn end, the end-of-generation token of chat models.
    pub const IM_END: u32 = 4;

    /// The base vocabulary: specials, byte tokens, `▁`, printable ASCII, common words.
    pub fn new() -> Vocab {
        let mut v = Vocab::empty();
        let specials = [
            ("<unk>", TokenKind::Unknown),
            ("<s>", TokenKind::Control),
            ("</s>", TokenKind::Control),
            ("<|im_start|>", TokenKind::Control),
            ("<|im_end|>", TokenKind::Control),
        ];
        for (text, kind) in specials {
            v.push(text, 0.0, kind).expect("specials are distinct");
        }
        for b in 0..=255u8 {
            v.push(&format!("<0x{b:02X}>"), 0.0, TokenKind::Byte)
                .expect("byte tokens are distinct");
        }
        v.piece(&SPACE.to_string());
        for c in (0x21u8..=0x7e).map(char::from) {
            v.piece(&c.to_string());
        }
        for word in COMMON_WORDS
            .split_whitespace()
            .chain(CAPITALISED.split_whitespace())
        {
            v.piece_with_prefixes(&format!("{SPACE}{word}"));
        }
        // Sentence starts have no space before them.
        for word in CAPITALISED.split_whitespace() {
            v.piece_with_prefixes(word);
        }
        v
    }

    /// The base vocabulary plus `extra` pieces (duplicates of existing ones are kept
    /// once).
    pub fn with_pieces<S: AsRef<str>>(extra: impl IntoIterator<Item = S>) -> Vocab {
        let mut v = Vocab::new();
        for piece in extra {
            v.piece(piece.as_ref());
        }
        v
    }

    /// A vocabulary with no tokens at all (for building a custom one with `push`).
    pub fn empty() -> Vocab {
        Vocab {
            tokens: Vec::new(),
            index: HashMap::new(),
            next_score: -1.0,
        }
    }

    /// Adds a token; fails if the string is already present.
    pub fn push(&mut self, text: &str, score: f32, kind: TokenKind) -> Result<u32, SynthError> {
        if self.index.contains_key(text) {
            return Err(SynthError::DuplicateToken(text.to_owned()));
        }
        let id = u32::try_from(self.tokens.len()).expect("vocabularies stay below 2^32 tokens");
        self.index.insert(text.to_owned(), id);
        self.tokens.push(VocabToken {
            text: text.to_owned(),
            score,
            kind,
        });
        Ok(id)
    }

    /// The id of normal piece `text`, added if absent.
    pub fn piece(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.index.get(text) {
            return id;
        }
        let score = self.next_score;
        self.next_score -= 1.0;
        self.push(text, score, TokenKind::Normal)
            .expect("absent strings push")
    }

    /// Adds `text` and every prefix of it, shortest first, so SentencePiece's pairwise
    /// merges can build it from single characters.
    fn piece_with_prefixes(&mut self, text: &str) {
        for (i, c) in text.char_indices().skip(1) {
            self.piece(&text[..i + c.len_utf8()]);
        }
    }

    /// Adds unique filler pieces (`▁ba`, `▁bade`, …) until the vocabulary has `n`
    /// tokens: pronounceable, so a random model's babble reads like words.
    pub fn pad_to(&mut self, n: usize) {
        const CONSONANTS: &[u8] = b"bdfgklmnprstvz";
        const VOWELS: &[u8] = b"aeiou";
        let syllables: Vec<String> = CONSONANTS
            .iter()
            .flat_map(|&c| {
                VOWELS
                    .iter()
                    .map(move |&v| format!("{}{}", c as char, v as char))
            })
            .collect();
        let mut i = 0usize;
        while self.tokens.len() < n {
            // Little-endian base-70 digits of a counter: 1, 2, 3 … syllables.
            let mut word = String::new();
            let mut k = i;
            loop {
                word.push_str(&syllables[k % syllables.len()]);
                k /= syllables.len();
                if k == 0 {
                    break;
                }
                k -= 1;
            }
            // Alternate word starts and word continuations.
            let text = if i % 4 == 3 {
                word
            } else {
                format!("{SPACE}{word}")
            };
            if !self.index.contains_key(&text) {
                self.piece(&text);
            }
            i += 1;
        }
    }

    pub fn id(&self, text: &str) -> Option<u32> {
        self.index.get(text).copied()
    }

    pub fn token(&self, id: u32) -> Option<&VocabToken> {
        self.tokens.get(id as usize)
    }

    pub fn tokens(&self) -> &[VocabToken] {
        &self.tokens
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether `text` names a token that is not a normal piece (control, byte,
    /// unknown): such strings cannot double as script text.
    pub fn is_special(&self, text: &str) -> bool {
        self.id(text)
            .and_then(|id| self.token(id))
            .is_some_and(|t| t.kind != TokenKind::Normal)
    }

    /// Writes the `tokenizer.ggml.*` keys.
    pub(crate) fn write_metadata(&self, w: &mut GgufWriter<'_>) {
        w.set("tokenizer.ggml.model", "llama");
        w.set(
            "tokenizer.ggml.tokens",
            self.tokens
                .iter()
                .map(|t| t.text.clone())
                .collect::<Vec<_>>(),
        );
        w.set(
            "tokenizer.ggml.scores",
            self.tokens.iter().map(|t| t.score).collect::<Vec<_>>(),
        );
        w.set(
            "tokenizer.ggml.token_type",
            self.tokens
                .iter()
                .map(|t| t.kind as i32)
                .collect::<Vec<_>>(),
        );
        w.set("tokenizer.ggml.unknown_token_id", Vocab::UNK);
        w.set("tokenizer.ggml.bos_token_id", Vocab::BOS);
        w.set("tokenizer.ggml.eos_token_id", Vocab::EOS);
        // llama.cpp would find `<|im_end|>` by its text anyway; saying so keeps the
        // model's end of turn explicit for other readers.
        w.set("tokenizer.ggml.eot_token_id", Vocab::IM_END);
        w.set("tokenizer.ggml.add_bos_token", true);
        w.set("tokenizer.ggml.add_eos_token", false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn base_vocab_has_the_sentencepiece_essentials() {
        let v = Vocab::new();
        assert_eq!(v.token(Vocab::UNK).unwrap().text, "<unk>");
        assert_eq!(v.token(Vocab::UNK).unwrap().kind, TokenKind::Unknown);
        assert_eq!(v.token(Vocab::BOS).unwrap().text, "<s>");
        assert_eq!(v.token(Vocab::EOS).unwrap().text, "</s>");
        assert_eq!(v.token(Vocab::IM_START).unwrap().text, "<|im_start|>");
        assert_eq!(v.token(Vocab::IM_END).unwrap().text, "<|im_end|>");
        assert_eq!(v.token(Vocab::IM_END).unwrap().kind, TokenKind::Control);
        assert_eq!(v.id("<0x00>"), Some(5));
        assert_eq!(v.id("<0x0A>"), Some(15));
        assert_eq!(v.id("<0xFF>"), Some(260));
        assert_eq!(v.token(260).unwrap().kind, TokenKind::Byte);
        assert!(v.id("▁").is_some());
        assert!(v.id("▁the").is_some());
        assert!(v.id("~").is_some());
        assert!(v.len() > 500, "{}", v.len());
    }

    #[test]
    fn token_strings_are_unique() {
        let mut v = Vocab::with_pieces(["▁the", "▁orchestra", "▁orchestra", "☕"]);
        v.pad_to(32000);
        assert_eq!(v.len(), 32000);
        let set: HashSet<&str> = v.tokens().iter().map(|t| t.text.as_str()).collect();
        assert_eq!(set.len(), v.len());
        assert!(v.push("▁the", 0.0, TokenKind::Normal).is_err());
    }

    #[test]
    fn every_word_piece_is_reachable_by_merges() {
        // SentencePiece builds a piece by merging adjacent pieces that are themselves in
        // the vocabulary; with every prefix present, `▁x` + `y` chains always exist.
        let v = Vocab::new();
        for t in v.tokens().iter().filter(|t| t.kind == TokenKind::Normal) {
            let chars: Vec<char> = t.text.chars().collect();
            for n in 1..chars.len() {
                let prefix: String = chars[..n].iter().collect();
                assert!(v.id(&prefix).is_some(), "`{prefix}` of `{}`", t.text);
            }
        }
    }

    #[test]
    fn common_pieces_outrank_their_extensions() {
        let v = Vocab::new();
        let score = |s: &str| v.token(v.id(s).unwrap()).unwrap().score;
        assert!(score("▁t") > score("▁th"));
        assert!(score("▁th") > score("▁the"));
    }
}
