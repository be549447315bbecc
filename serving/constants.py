"""TF Serving's fixed names and limits, one place for the exporter that writes them and the
server that reads them. No imports: `--help` and the exporter's option checks load nothing.

- `SERVING_TAG`, `DEFAULT_SIGNATURE`: `tensorflow/cc/saved_model/tag_constants.h` (kServe) and
  `signature_constants.h` (kDefaultServingSignatureDefKey).
- `WARMUP_FILE`, `MAX_WARMUP_RECORDS`: `servables/tensorflow/saved_model_warmup_util.cc`
  (kSavedModelWarmupRequestsFilename under assets.extra/, kMaxNumRecords).
- `PROTOBUF_LIMIT`: protobuf's 2 GiB serialized-message ceiling (`onnx.checker`'s
  MAXIMUM_PROTOBUF; a GraphDef, saved_model.pb or inline ONNX file past it cannot be written).
"""

SERVING_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000
PROTOBUF_LIMIT = 2**31 - 1
