// ggml's own block codecs, for tools/check_llamacpp_quants.py: write blocks with ggml's quantizer
// (ggml_quantize_chunk, the routine llama-quantize calls per tensor) and decode blocks with ggml's
// dequantizer (ggml_get_type_traits(type)->to_float), so wgmtp's numpy twins are judged against
// ggml itself, bit for bit.
//   wgmtp-ggml-blocks quant TYPE N_ROWS N_PER_ROW IN.f32 OUT.bin [IMATRIX.f32]
//   wgmtp-ggml-blocks deq TYPE N_ELEMS IN.bin OUT.f32
// TYPE is ggml's type number (gguf-py's GGMLQuantizationType value). Files are raw little-endian.
#include "ggml.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

static std::vector<char> slurp(const char * path) {
    std::vector<char> buf;
    FILE * f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(1); }
    char tmp[1 << 16];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) buf.insert(buf.end(), tmp, tmp + n);
    fclose(f);
    return buf;
}

static void spill(const char * path, const void * data, size_t n) {
    FILE * f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) { fprintf(stderr, "cannot write %s\n", path); exit(1); }
    fclose(f);
}

int main(int argc, char ** argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s quant TYPE N_ROWS N_PER_ROW IN OUT [IMATRIX] | deq TYPE N IN OUT\n", argv[0]);
        return 2;
    }
    const ggml_type type = (ggml_type) atoi(argv[2]);
    if (strcmp(argv[1], "quant") == 0 && argc >= 7) {
        const int64_t rows = atoll(argv[3]), per_row = atoll(argv[4]);
        std::vector<char> src = slurp(argv[5]);
        if ((int64_t) src.size() != rows * per_row * 4) { fprintf(stderr, "input size mismatch\n"); return 1; }
        std::vector<char> imat;
        if (argc >= 8) imat = slurp(argv[7]);
        std::vector<char> dst(ggml_row_size(type, per_row) * rows);
        const size_t n = ggml_quantize_chunk(type, (const float *) src.data(), dst.data(), 0, rows, per_row,
                                             imat.empty() ? nullptr : (const float *) imat.data());
        spill(argv[6], dst.data(), n);
        ggml_quantize_free();
        return 0;
    }
    if (strcmp(argv[1], "deq") == 0) {
        const int64_t n = atoll(argv[3]);
        std::vector<char> src = slurp(argv[4]);
        if (src.size() != ggml_row_size(type, n)) { fprintf(stderr, "input size mismatch\n"); return 1; }
        std::vector<float> out(n);
        ggml_get_type_traits(type)->to_float(src.data(), out.data(), n);
        spill(argv[5], out.data(), n * sizeof(float));
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
