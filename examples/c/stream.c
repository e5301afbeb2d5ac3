/*
 * Streams a WAV file and a folder of frames through the avseg C ABI, the way a camera loop would:
 * audio arrives in 10 ms chunks, each frame is pushed when the audio clock reaches its time, the
 * session processes after every chunk, and every result is printed as soon as it exists, with its
 * stream lag: the audio clock when the result was taken minus the end of the frame's own audio
 * patch (avseg_result_timing.patch_end).
 *
 *   stream MODEL_DIR FRAMES_DIR AUDIO.wav [HFOV_DEG [auto|windows|per-frame|sliding|sliding-padded]]
 *
 * The mode defaults to auto: each frame alone for a package of independent frames (the default
 * model), lag under one chunk; windows of T frames otherwise, where a frame waits for its window.
 * For official TPAVI packages, sliding (or sliding-padded) gives each frame its result from the
 * window of the T instants ending at it, as soon as its own patch is in.
 *
 * FRAMES_DIR holds binary PPM (P6) frames, taken in natural name order (frame_2 before
 * frame_10). AUDIO.wav is 16-bit PCM. Frame i is shown at i + 0.9375 s, the time AVSBench
 * sampled it. The file parsers are deliberately minimal: this is an example, not a decoder.
 *
 * Build: cc -std=c99 -I include examples/c/stream.c $(pkg-config --libs avseg)
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "avseg.h"

#define FRAME_OFFSET_S 0.9375
#define AUDIO_CHUNK_S 0.01

static void die(const char *what) {
    fprintf(stderr, "error: %s\n", what);
    exit(1);
}

/* Reports a failed avseg call with its status and message, then exits. */
static void check(avseg_status st, const char *call) {
    if (st != AVSEG_OK) {
        fprintf(stderr, "error: %s: %s: %s\n", call, avseg_status_name((int32_t)st), avseg_last_error_message());
        exit(1);
    }
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f) return NULL;
    for (;;) {
        if (n == cap) {
            unsigned char *grown;
            cap = cap ? cap * 2 : 65536;
            grown = (unsigned char *)realloc(buf, cap);
            if (!grown) { free(buf); fclose(f); return NULL; }
            buf = grown;
        }
        {
            size_t got = fread(buf + n, 1, cap - n, f);
            n += got;
            if (got == 0) break;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

static unsigned le16(const unsigned char *p) { return (unsigned)p[0] | ((unsigned)p[1] << 8); }
static unsigned long le32(const unsigned char *p) {
    return (unsigned long)p[0] | ((unsigned long)p[1] << 8) | ((unsigned long)p[2] << 16) | ((unsigned long)p[3] << 24);
}

typedef struct {
    int16_t *samples; /* interleaved */
    size_t count;     /* values, all channels */
    unsigned rate;
    unsigned channels;
} wav_pcm;

/* 16-bit PCM WAV only: walks the RIFF chunks for "fmt " and "data". */
static int read_wav(const char *path, wav_pcm *out) {
    size_t len = 0, pos = 12, i;
    unsigned char *d = read_file(path, &len);
    const unsigned char *data = NULL;
    size_t data_len = 0;
    unsigned format = 0, bits = 0;
    if (!d) return 0;
    if (len < 12 || memcmp(d, "RIFF", 4) != 0 || memcmp(d + 8, "WAVE", 4) != 0) { free(d); return 0; }
    out->rate = out->channels = 0;
    while (pos + 8 <= len) {
        size_t size = le32(d + pos + 4), body = pos + 8;
        if (size > len - body) size = len - body;
        if (memcmp(d + pos, "fmt ", 4) == 0 && size >= 16) {
            format = le16(d + body);
            out->channels = le16(d + body + 2);
            out->rate = (unsigned)le32(d + body + 4);
            bits = le16(d + body + 14);
        } else if (memcmp(d + pos, "data", 4) == 0) {
            data = d + body;
            data_len = size;
        }
        pos = body + size + (size & 1); /* chunks are padded to even sizes */
    }
    /* 0xFFFE is WAVE_FORMAT_EXTENSIBLE, which the sample's writer may use for plain PCM. */
    if (!data || (format != 1 && format != 0xFFFE) || bits != 16 || out->channels == 0 || out->rate == 0) {
        free(d);
        return 0;
    }
    out->count = data_len / 2 / out->channels * out->channels;
    out->samples = (int16_t *)malloc(out->count * sizeof(int16_t) + 1);
    if (!out->samples) { free(d); return 0; }
    for (i = 0; i < out->count; i++) out->samples[i] = (int16_t)le16(data + 2 * i);
    free(d);
    return 1;
}

/* Binary PPM (P6, maxval 255) into tightly packed RGB8. */
static unsigned char *read_ppm(const char *path, unsigned *w, unsigned *h) {
    size_t len = 0, pos = 2, need;
    unsigned long v[3];
    int k;
    unsigned char *d = read_file(path, &len), *rgb;
    if (!d) return NULL;
    if (len < 2 || d[0] != 'P' || d[1] != '6') { free(d); return NULL; }
    for (k = 0; k < 3; k++) {
        for (;;) { /* whitespace and comments */
            while (pos < len && isspace(d[pos])) pos++;
            if (pos < len && d[pos] == '#') { while (pos < len && d[pos] != '\n') pos++; } else break;
        }
        v[k] = 0;
        if (pos >= len || !isdigit(d[pos])) { free(d); return NULL; }
        while (pos < len && isdigit(d[pos]) && v[k] < 100000) v[k] = v[k] * 10 + (unsigned long)(d[pos++] - '0');
    }
    pos++; /* the single whitespace byte before the pixels */
    need = (size_t)v[0] * v[1] * 3;
    if (v[2] != 255 || v[0] == 0 || v[1] == 0 || pos > len || len - pos < need) { free(d); return NULL; }
    rgb = (unsigned char *)malloc(need);
    if (rgb) memcpy(rgb, d + pos, need);
    free(d);
    *w = (unsigned)v[0];
    *h = (unsigned)v[1];
    return rgb;
}

/* Natural order, so that frame_10 follows frame_9. */
static int natural_cmp(const void *pa, const void *pb) {
    const char *a = *(const char *const *)pa, *b = *(const char *const *)pb;
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            unsigned long x = strtoul(a, (char **)&a, 10), y = strtoul(b, (char **)&b, 10);
            if (x != y) return x < y ? -1 : 1;
        } else {
            if (*a != *b) return (unsigned char)*a - (unsigned char)*b;
            a++;
            b++;
        }
    }
    return (unsigned char)*a - (unsigned char)*b;
}

static char **list_ppm(const char *dir, size_t *n) {
    DIR *dp = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t cap = 0;
    *n = 0;
    if (!dp) return NULL;
    while ((e = readdir(dp)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".ppm") != 0) continue;
        if (*n == cap) {
            char **grown;
            cap = cap ? cap * 2 : 16;
            grown = (char **)realloc(names, cap * sizeof(char *));
            if (!grown) die("out of memory");
            names = grown;
        }
        names[*n] = (char *)malloc(strlen(dir) + l + 2);
        if (!names[*n]) die("out of memory");
        sprintf(names[*n], "%s/%s", dir, e->d_name);
        (*n)++;
    }
    closedir(dp);
    qsort(names, *n, sizeof(char *), natural_cmp);
    return names;
}

/* Prints every result the session has ready, oldest first: one process call can complete a whole
 * window of results. The caller-owned buffers grow only when a result needs more. */
static size_t print_results(avseg_session *s, float hfov, double now, unsigned char **mask, size_t *mask_cap,
                            avseg_object **objs, size_t *obj_cap) {
    size_t printed = 0;
    for (;;) {
        avseg_result_info info;
        avseg_result_timing timing;
        size_t i, fg = 0, pixels;
        avseg_status st = avseg_session_pop_result(s, hfov, &info, *mask, *mask_cap, *objs, *obj_cap);
        if (st == AVSEG_ERR_NO_RESULT) return printed;
        if (st == AVSEG_ERR_BUFFER_TOO_SMALL) {
            /* info holds the sizes; the result stays first in line for the retry. */
            pixels = (size_t)info.width * info.height;
            if (pixels > *mask_cap) {
                free(*mask);
                *mask = (unsigned char *)malloc(pixels);
                if (!*mask) die("out of memory");
                *mask_cap = pixels;
            }
            if (info.object_count > *obj_cap) {
                free(*objs);
                *objs = (avseg_object *)malloc(info.object_count * sizeof(avseg_object));
                if (!*objs) die("out of memory");
                *obj_cap = info.object_count;
            }
            continue;
        }
        check(st, "avseg_session_pop_result");
        memset(&timing, 0, sizeof timing);
        timing.struct_size = (uint32_t)sizeof timing;
        check(avseg_session_popped_timing(s, &timing), "avseg_session_popped_timing");
        pixels = (size_t)info.width * info.height;
        for (i = 0; i < pixels; i++) fg += (*mask)[i] != 0;
        printf("result seq=%llu t=%.4f size=%ux%u fg=%.4f mask_fg=%lu objects=%lu patch_end=%.4f lag_ms=%.1f "
               "latency_ms=%.1f\n",
               (unsigned long long)info.sequence, info.frame_timestamp, info.width, info.height,
               info.foreground_fraction, (unsigned long)fg, (unsigned long)info.object_count, timing.patch_end,
               (now - timing.patch_end) * 1e3, info.latency_ms);
        for (i = 0; i < info.object_count; i++) {
            const avseg_object *o = &(*objs)[i];
            printf("  object id=%u class=%u bbox=%u,%u,%u,%u area=%llu centroid=%.1f,%.1f conf=%.3f bearing=%.2f\n",
                   o->id, o->class_id, o->bbox_x, o->bbox_y, o->bbox_w, o->bbox_h, (unsigned long long)o->area,
                   o->centroid_x, o->centroid_y, o->confidence, o->bearing_deg);
        }
        printed++;
    }
}

int main(int argc, char **argv) {
    avseg_session_options opts;
    avseg_session *s = NULL;
    avseg_stats stats;
    wav_pcm wav;
    char **frames;
    size_t n_frames = 0, audio_pos = 0, i, next_frame = 0, produced = 0, chunk;
    float hfov = 60.0f;
    uint32_t mode = AVSEG_STREAM_AUTO, chosen = 0;
    unsigned char *mask = NULL;
    size_t mask_cap = 0, obj_cap = 0;
    avseg_object *objs = NULL;

    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: %s MODEL_DIR FRAMES_DIR AUDIO.wav [HFOV_DEG [auto|windows|per-frame|sliding|sliding-padded]]\n", argv[0]);
        return 2;
    }
    if (argc >= 5) hfov = (float)atof(argv[4]);
    if (argc == 6) {
        if (strcmp(argv[5], "windows") == 0) mode = AVSEG_STREAM_WINDOWS;
        else if (strcmp(argv[5], "per-frame") == 0) mode = AVSEG_STREAM_PER_FRAME;
        else if (strcmp(argv[5], "sliding") == 0) mode = AVSEG_STREAM_SLIDING;
        else if (strcmp(argv[5], "sliding-padded") == 0) mode = AVSEG_STREAM_SLIDING_PADDED;
        else if (strcmp(argv[5], "auto") != 0) die("mode must be auto, windows, per-frame, sliding or sliding-padded");
    }
    if (avseg_abi_version() != AVSEG_ABI_VERSION) die("avseg.h does not match the linked library");
    printf("avseg %s (ABI %u)\n", avseg_version(), avseg_abi_version());

    if (!read_wav(argv[3], &wav)) die("cannot read the WAV file (16-bit PCM only)");
    frames = list_ppm(argv[2], &n_frames);
    if (!frames || n_frames == 0) die("no .ppm frames in FRAMES_DIR");

    /* Non-NULL from the start: NULL with capacity 0 would tell pop_result "mask not wanted". */
    mask = (unsigned char *)malloc(1);
    objs = (avseg_object *)malloc(sizeof(avseg_object));
    if (!mask || !objs) die("out of memory");
    mask_cap = obj_cap = 1;
    check(avseg_session_options_default(&opts), "avseg_session_options_default");
    opts.threads = 2;
    opts.backend = AVSEG_BACKEND_CPU;
    check(avseg_session_new_with_mode(argv[1], &opts, mode, &s), "avseg_session_new_with_mode");
    check(avseg_session_mode(s, &chosen), "avseg_session_mode");
    printf("mode %s\n", chosen == AVSEG_STREAM_PER_FRAME    ? "per-frame"
                         : chosen == AVSEG_STREAM_SLIDING   ? "sliding"
                         : chosen == AVSEG_STREAM_SLIDING_PADDED ? "sliding-padded"
                                                             : "windows");

    chunk = (size_t)(AUDIO_CHUNK_S * wav.rate + 0.5) * wav.channels;
    while (audio_pos < wav.count || next_frame < n_frames) {
        /* The audio clock: seconds of audio pushed so far. */
        double now = (double)(audio_pos / wav.channels) / wav.rate;
        size_t new_results = 0;
        while (next_frame < n_frames && ((double)next_frame + FRAME_OFFSET_S <= now || audio_pos >= wav.count)) {
            unsigned w = 0, h = 0;
            unsigned char *rgb = read_ppm(frames[next_frame], &w, &h);
            if (!rgb) die(frames[next_frame]);
            check(avseg_session_push_frame_rgb8(s, rgb, (size_t)w * h * 3, w, h, 0, (double)next_frame + FRAME_OFFSET_S),
                  "avseg_session_push_frame_rgb8");
            free(rgb);
            next_frame++;
        }
        if (audio_pos < wav.count) {
            size_t n = chunk < wav.count - audio_pos ? chunk : wav.count - audio_pos;
            check(avseg_session_push_audio_s16(s, wav.samples + audio_pos, n, wav.rate, wav.channels, now),
                  "avseg_session_push_audio_s16");
            audio_pos += n;
            now = (double)(audio_pos / wav.channels) / wav.rate;
        }
        check(avseg_session_process(s, &new_results), "avseg_session_process");
        if (new_results > 0) produced += print_results(s, hfov, now, &mask, &mask_cap, &objs, &obj_cap);
    }
    {
        size_t new_results = 0;
        double end = (double)(audio_pos / wav.channels) / wav.rate;
        check(avseg_session_finish(s, &new_results), "avseg_session_finish");
        if (new_results > 0) produced += print_results(s, hfov, end, &mask, &mask_cap, &objs, &obj_cap);
    }
    check(avseg_session_stats(s, &stats), "avseg_session_stats");
    printf("summary frames=%lu results=%lu windows=%llu frames_used=%llu frames_dropped=%llu overwritten=%llu\n",
           (unsigned long)n_frames, (unsigned long)produced, (unsigned long long)stats.windows,
           (unsigned long long)stats.frames_used, (unsigned long long)stats.frames_dropped,
           (unsigned long long)stats.results_overwritten);

    check(avseg_session_free(s), "avseg_session_free");
    for (i = 0; i < n_frames; i++) free(frames[i]);
    free(frames);
    free(wav.samples);
    free(mask);
    free(objs);
    return 0;
}
