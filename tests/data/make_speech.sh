#!/usr/bin/env bash
# Regenerates the committed test speech. Source: espeak-ng (Debian package espeak-ng, voice en-us,
# 150 wpm) resampled by sox to PCM s16le 16 kHz mono, with a faint white-noise floor (-60 dBFS)
# so that the VAD sees a realistic background instead of digital silence.
# Usage: bash tests/data/make_speech.sh   (needs espeak-ng and sox)
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say() { espeak-ng -v en-us -s 150 -w "$tmp/raw.wav" "$2"; sox -R "$tmp/raw.wav" -r 16000 -c 1 -b 16 "$tmp/$1.wav"; }
gap() { sox -n -r 16000 -c 1 -b 16 "$tmp/$1.wav" trim 0 "$2"; }
say a "Please call me back tomorrow morning."
say b "We will meet at the train station at noon."
say c "Open the window and let the fresh air in."
gap lead 0.5
gap pause 1.5
gap tail 1.0
sox "$tmp/lead.wav" "$tmp/a.wav" "$tmp/pause.wav" "$tmp/b.wav" "$tmp/pause.wav" "$tmp/c.wav" "$tmp/tail.wav" "$tmp/clean.wav"
sox "$tmp/clean.wav" -p synth whitenoise vol 0.001 | sox -m "$tmp/clean.wav" - -b 16 three_utterances.wav
sox "$tmp/lead.wav" "$tmp/b.wav" "$tmp/tail.wav" "$tmp/one.wav"
sox "$tmp/one.wav" -p synth whitenoise vol 0.001 | sox -m "$tmp/one.wav" - -b 16 one_sentence.wav
# The same sentence as 44.1 kHz stereo, for the client's conversion path.
sox one_sentence.wav -r 44100 -c 2 one_sentence_44k_stereo.wav
