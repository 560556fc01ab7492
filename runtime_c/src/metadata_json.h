/* tsptq runtime: the 'tsptq' metadata entry of a tsptq .tflite file, a JSON object (internal). Only as far as the
 * runtime needs it: the top-level "format" and "version", and the keys of the top-level "two_scale" map. */
#ifndef TSPTQ_METADATA_JSON_H
#define TSPTQ_METADATA_JSON_H

#include <stdint.h>

#include "runtime.h"

/* 1: s[0..n) is a JSON object with format == "tsptq" and an integer version (*version, saturated to +-2^62);
 * 0: not there / not JSON. */
int tq_json_meta(const uint8_t *s, uint32_t n, int64_t *version);

/* The metadata's "two_scale" map names exactly the tensors of m that carry custom quantization details (the Python
 * reader also compares the descriptions field by field; the C runtime does not use them). s[0..n) was accepted by
 * tq_json_meta. 1: fine; 0: refused, st filled (TSPTQ_ERR_INVALID_MODEL). */
int tq_json_check_two_scale(const tsptq_model *m, const uint8_t *s, uint32_t n, tsptq_status *st);

#endif
