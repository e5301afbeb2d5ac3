/*
 * A hostile C caller: NULLs, zero sizes, wrong buffer sizes, bad options, a missing model, a
 * freed and a forged handle, and several threads on one session. Every call must return the
 * documented status with a message (or an empty message on success), and nothing may crash.
 *
 *   hostile MODEL_DIR
 *
 * Prints one line per check and "hostile: N checks, 0 failures" at the end; exits 1 on failure.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "avseg.h"
#include "avseg.h" /* twice on purpose: the include guard must hold */

static int checks = 0, failures = 0;

/* The message must be read before any other avseg call, so this takes the status already made. */
static void expect(avseg_status got, avseg_status want, const char *expr, int line) {
    const char *msg = avseg_last_error_message();
    int msg_ok = (want == AVSEG_OK) ? msg[0] == '\0' : msg[0] != '\0';
    checks++;
    if (got != want || !msg_ok) {
        failures++;
        printf("FAIL line %d: %s -> %s, want %s; message \"%s\"\n", line, expr, avseg_status_name((int32_t)got),
               avseg_status_name((int32_t)want), msg);
    } else {
        printf("ok   %-28s %s%s%s\n", avseg_status_name((int32_t)got), expr, msg[0] ? "  // " : "", msg);
    }
}
#define EXPECT(call, want) expect((call), (want), #call, __LINE__)

static void truth(int cond, const char *what, int line) {
    checks++;
    if (!cond) {
        failures++;
        printf("FAIL line %d: %s\n", line, what);
    } else {
        printf("ok   %s\n", what);
    }
}
#define TRUTH(cond) truth((cond), #cond, __LINE__)

#define W 64
#define H 48
#define RATE 16000

static float audio[RATE * 6];
static int16_t audio16[RATE];
static unsigned char frame[H][W * 3 + 16]; /* rows padded: stride W*3+16 */

typedef struct {
    avseg_session *s;
    int errors;
} worker_arg;

/* Pushes audio and reads results while other threads do the same on the same session. */
static void *worker(void *p) {
    worker_arg *a = (worker_arg *)p;
    avseg_result_info info;
    avseg_stats stats;
    int i;
    for (i = 0; i < 50; i++) {
        avseg_status st = avseg_session_latest(a->s, &info);
        if (st != AVSEG_OK && st != AVSEG_ERR_NO_RESULT) a->errors++;
        if (avseg_session_stats(a->s, &stats) != AVSEG_OK) a->errors++;
        if (avseg_session_push_audio_f32(a->s, NULL, 0, RATE, 1, 0.0) != AVSEG_ERR_NULL) a->errors++;
        if (avseg_last_error_message()[0] == '\0') a->errors++; /* each thread has its own message */
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *model;
    avseg_session_options opts, bad;
    avseg_session *s = NULL, *missing = (avseg_session *)0, *forged;
    avseg_result_info info;
    avseg_result_timing timing;
    avseg_stats stats;
    avseg_object objs[256];
    uint32_t mode = 99;
    unsigned char mask[W * H];
    float conf[W * H];
    size_t needed = 0, count = 0, n = 0, i;
    char small[8];
    int y, x, local = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    model = argv[1];
    forged = (avseg_session *)(void *)&local;
    for (i = 0; i < sizeof audio / sizeof audio[0]; i++) audio[i] = 0.3f * (float)sin((double)i * 0.17);
    for (i = 0; i < sizeof audio16 / sizeof audio16[0]; i++) audio16[i] = (int16_t)(i * 7);
    for (y = 0; y < H; y++)
        for (x = 0; x < W * 3; x++) frame[y][x] = (unsigned char)(x + 3 * y);

    /* Versions. */
    TRUTH(avseg_abi_version() == AVSEG_ABI_VERSION);
    TRUTH(avseg_version() != NULL && avseg_version()[0] == '0' + AVSEG_VERSION_MAJOR);
    TRUTH(strcmp(avseg_status_name(-1), "AVSEG_UNKNOWN_STATUS") == 0);
    TRUTH(strcmp(avseg_status_name(AVSEG_ERR_PANIC), "AVSEG_ERR_PANIC") == 0);
    TRUTH(isnan(avseg_bearing_deg(10.0f, 0, 60.0f)));
    TRUTH(fabsf(avseg_bearing_deg(64.0f, 64, 90.0f) - 45.0f) < 1e-3f);

    /* Options and creation. */
    EXPECT(avseg_session_options_default(NULL), AVSEG_ERR_NULL);
    EXPECT(avseg_session_options_default(&opts), AVSEG_OK);
    EXPECT(avseg_session_new(NULL, &opts, &s), AVSEG_ERR_NULL);
    EXPECT(avseg_session_new(model, &opts, NULL), AVSEG_ERR_NULL);
    EXPECT(avseg_session_new("", &opts, &s), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_new("/nonexistent/avseg-model", &opts, &s), AVSEG_ERR_MODEL);
    TRUTH(strstr(avseg_last_error_message(), "/nonexistent/avseg-model") != NULL);
    TRUTH(s == NULL); /* outputs are written only on success */
    EXPECT(avseg_session_new("/", &opts, &s), AVSEG_ERR_MODEL);
    bad = opts; bad.backend = 99;
    EXPECT(avseg_session_new(model, &bad, &s), AVSEG_ERR_INVALID_ARGUMENT);
    bad = opts; bad.threshold = 1.5f;
    EXPECT(avseg_session_new(model, &bad, &s), AVSEG_ERR_INVALID_ARGUMENT);
    bad = opts; bad.threshold = (float)NAN;
    EXPECT(avseg_session_new(model, &bad, &s), AVSEG_ERR_INVALID_ARGUMENT);
    bad = opts; bad.threshold = -0.5f;
    EXPECT(avseg_session_new(model, &bad, &s), AVSEG_ERR_INVALID_ARGUMENT);
    bad = opts; bad.threads = 100000;
    EXPECT(avseg_session_new(model, &bad, &s), AVSEG_ERR_INVALID_ARGUMENT);
    TRUTH(s == NULL);
    opts.threads = 2;
    /* Stream modes (ABI 3): an unknown value, and per frame on a package whose frames are coupled
     * (the tiny TPAVI package groups them by 5). */
    EXPECT(avseg_session_new_with_mode(model, &opts, 7, &s), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_new_with_mode(NULL, &opts, AVSEG_STREAM_AUTO, &s), AVSEG_ERR_NULL);
    EXPECT(avseg_session_new_with_mode(model, &opts, AVSEG_STREAM_AUTO, NULL), AVSEG_ERR_NULL);
    EXPECT(avseg_session_new_with_mode(model, &opts, AVSEG_STREAM_PER_FRAME, &s), AVSEG_ERR_INVALID_ARGUMENT);
    TRUTH(strstr(avseg_last_error_message(), "one frame at a time") != NULL);
    TRUTH(s == NULL);
    EXPECT(avseg_session_new(model, &opts, &s), AVSEG_OK);
    TRUTH(s != NULL);
    EXPECT(avseg_session_mode(s, NULL), AVSEG_ERR_NULL);
    EXPECT(avseg_session_mode(NULL, &mode), AVSEG_ERR_NULL);
    EXPECT(avseg_session_mode(s, &mode), AVSEG_OK);
    TRUTH(mode == AVSEG_STREAM_WINDOWS);
    /* Sliding windows (ABI 4) suit the tiny TPAVI package; the mode is reported as asked, and a
     * hop has no meaning in them. */
    {
        avseg_session *sliding = NULL;
        avseg_session_options hopped = opts;
        hopped.hop = 2;
        EXPECT(avseg_session_new_with_mode(model, &hopped, AVSEG_STREAM_SLIDING, &sliding), AVSEG_ERR_INVALID_ARGUMENT);
        TRUTH(sliding == NULL);
        EXPECT(avseg_session_new_with_mode(model, &opts, AVSEG_STREAM_SLIDING_PADDED, &sliding), AVSEG_OK);
        EXPECT(avseg_session_mode(sliding, &mode), AVSEG_OK);
        TRUTH(mode == AVSEG_STREAM_SLIDING_PADDED);
        EXPECT(avseg_session_free(sliding), AVSEG_OK);
    }

    /* The error message API itself. */
    EXPECT(avseg_session_process(NULL, NULL), AVSEG_ERR_NULL);
    n = avseg_last_error_copy(NULL, 0);
    TRUTH(n == strlen(avseg_last_error_message()) && n > sizeof small);
    TRUTH(avseg_last_error_copy(small, sizeof small) == n && strlen(small) == sizeof small - 1);

    /* NULL session everywhere. */
    EXPECT(avseg_session_push_audio_f32(NULL, audio, 100, RATE, 1, 0.0), AVSEG_ERR_NULL);
    EXPECT(avseg_session_push_audio_s16(NULL, audio16, 100, RATE, 1, 0.0), AVSEG_ERR_NULL);
    EXPECT(avseg_session_push_frame_rgb8(NULL, &frame[0][0], sizeof frame, W, H, sizeof frame[0], 0.0), AVSEG_ERR_NULL);
    EXPECT(avseg_session_process(NULL, &n), AVSEG_ERR_NULL);
    EXPECT(avseg_session_finish(NULL, &n), AVSEG_ERR_NULL);
    EXPECT(avseg_session_latest(NULL, &info), AVSEG_ERR_NULL);
    EXPECT(avseg_session_latest_mask(NULL, mask, sizeof mask, &needed), AVSEG_ERR_NULL);
    EXPECT(avseg_session_latest_confidence(NULL, conf, W * H, &needed), AVSEG_ERR_NULL);
    EXPECT(avseg_session_latest_objects(NULL, 60.0f, objs, 256, &count), AVSEG_ERR_NULL);
    EXPECT(avseg_session_latest_silent_objects(NULL, 60.0f, objs, 256, &count), AVSEG_ERR_NULL);
    EXPECT(avseg_session_label(NULL, 1, NULL, 0, NULL), AVSEG_ERR_NULL);
    EXPECT(avseg_session_latest_object_sound(NULL, 0, NULL, 0, NULL, NULL), AVSEG_ERR_NULL);
    EXPECT(avseg_session_stats(NULL, &stats), AVSEG_ERR_NULL);
    EXPECT(avseg_session_free(NULL), AVSEG_OK);

    /* Audio: NULL data, zero sizes, inconsistent shapes, bad timestamps. */
    EXPECT(avseg_session_push_audio_f32(s, NULL, 100, RATE, 1, 0.0), AVSEG_ERR_NULL);
    EXPECT(avseg_session_push_audio_f32(s, audio, 0, RATE, 1, 0.0), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_audio_f32(s, audio, 100, 0, 1, 0.0), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_audio_f32(s, audio, 100, RATE, 0, 0.0), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_audio_f32(s, audio, 101, RATE, 2, 0.0), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_audio_f32(s, audio, 100, RATE, 1, (double)NAN), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_audio_f32(s, audio, 100, RATE, 1, -1.0), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_audio_f32(s, audio, 100, RATE, 1, (double)INFINITY), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_audio_s16(s, NULL, 100, RATE, 1, 0.0), AVSEG_ERR_NULL);
    EXPECT(avseg_session_push_audio_s16(s, audio16, 0, RATE, 1, 0.0), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_audio_s16(s, audio16, 3, RATE, 2, 0.0), AVSEG_ERR_INVALID_ARGUMENT);

    /* Frames: NULL, zero sizes, short buffers, a stride narrower than a row. */
    EXPECT(avseg_session_push_frame_rgb8(s, NULL, sizeof frame, W, H, sizeof frame[0], 0.9375), AVSEG_ERR_NULL);
    EXPECT(avseg_session_push_frame_rgb8(s, &frame[0][0], 0, W, H, sizeof frame[0], 0.9375), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_frame_rgb8(s, &frame[0][0], sizeof frame, 0, H, 0, 0.9375), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_frame_rgb8(s, &frame[0][0], sizeof frame, W, 0, 0, 0.9375), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_frame_rgb8(s, &frame[0][0], sizeof frame, W, H, W * 3 - 1, 0.9375), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_frame_rgb8(s, &frame[0][0], W * H * 3 - 1, W, H, 0, 0.9375), AVSEG_ERR_INVALID_ARGUMENT);
    /* The last row needs no padding, but every one of its pixels. */
    EXPECT(avseg_session_push_frame_rgb8(s, &frame[0][0], (H - 1) * sizeof frame[0] + W * 3 - 1, W, H, sizeof frame[0], 0.9375), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_frame_rgb8(s, &frame[0][0], sizeof frame, 0xFFFFFFFFu, 0xFFFFFFFFu, 0, 0.9375), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_push_frame_rgb8(s, &frame[0][0], sizeof frame, W, H, sizeof frame[0], (double)NAN), AVSEG_ERR_INVALID_ARGUMENT);

    /* Reading before any result. */
    EXPECT(avseg_session_latest(s, &info), AVSEG_ERR_NO_RESULT);
    EXPECT(avseg_session_latest(s, NULL), AVSEG_ERR_NULL);
    EXPECT(avseg_session_latest_mask(s, mask, sizeof mask, &needed), AVSEG_ERR_NO_RESULT);
    EXPECT(avseg_session_latest_mask(s, NULL, sizeof mask, &needed), AVSEG_ERR_NULL);
    EXPECT(avseg_session_latest_objects(s, 60.0f, objs, 256, NULL), AVSEG_ERR_NULL);
    EXPECT(avseg_session_latest_objects(s, 0.0f, objs, 256, &count), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_latest_objects(s, 180.0f, objs, 256, &count), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_latest_objects(s, (float)NAN, objs, 256, &count), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_latest_objects(s, 60.0f, NULL, 4, &count), AVSEG_ERR_NULL);
    EXPECT(avseg_session_latest_silent_objects(s, 60.0f, objs, 256, &count), AVSEG_ERR_NO_RESULT);
    EXPECT(avseg_session_latest_silent_objects(s, 60.0f, objs, 256, NULL), AVSEG_ERR_NULL);
    EXPECT(avseg_session_latest_object_sound(s, 0, NULL, 0, NULL, NULL), AVSEG_ERR_NO_RESULT);
    /* Labels (ABI 4): the tiny package is binary, so 0 and 1 only; a short buffer is refused with
     * the length needed. */
    {
        char name[16];
        size_t len = 0;
        EXPECT(avseg_session_label(s, 1, name, sizeof name, &len), AVSEG_OK);
        TRUTH(strcmp(name, "foreground") == 0 && len == 10);
        EXPECT(avseg_session_label(s, 1, name, 4, &len), AVSEG_ERR_BUFFER_TOO_SMALL);
        TRUTH(len == 10);
        EXPECT(avseg_session_label(s, 1, NULL, 4, &len), AVSEG_ERR_NULL);
        EXPECT(avseg_session_label(s, 2, name, sizeof name, &len), AVSEG_ERR_INVALID_ARGUMENT);
    }
    EXPECT(avseg_session_pop_result(s, 60.0f, &info, NULL, 0, NULL, 0), AVSEG_ERR_NO_RESULT);
    memset(&timing, 0, sizeof timing);
    timing.struct_size = (uint32_t)sizeof timing;
    EXPECT(avseg_session_latest_timing(s, &timing), AVSEG_ERR_NO_RESULT);
    EXPECT(avseg_session_popped_timing(s, &timing), AVSEG_ERR_NO_RESULT);
    EXPECT(avseg_session_latest_timing(s, NULL), AVSEG_ERR_NULL);
    EXPECT(avseg_session_latest_timing(NULL, &timing), AVSEG_ERR_NULL);
    EXPECT(avseg_session_stats(s, NULL), AVSEG_ERR_NULL);
    EXPECT(avseg_session_stats(s, &stats), AVSEG_OK);
    TRUTH(stats.results == 0);

    /* Several threads on one session: serialised by its lock, each with its own last error. */
    {
        pthread_t t[4];
        worker_arg args[4];
        int k, errors = 0;
        for (k = 0; k < 4; k++) {
            args[k].s = s;
            args[k].errors = 0;
            pthread_create(&t[k], NULL, worker, &args[k]);
        }
        for (k = 0; k < 4; k++) {
            pthread_join(t[k], NULL);
            errors += args[k].errors;
        }
        TRUTH(errors == 0);
    }

    /* A real result: 6 s of audio and 5 padded-stride frames at i + 0.9375 s. */
    EXPECT(avseg_session_push_audio_f32(s, audio, sizeof audio / sizeof audio[0], RATE, 1, 0.0), AVSEG_OK);
    for (i = 0; i < 5; i++)
        EXPECT(avseg_session_push_frame_rgb8(s, &frame[0][0], sizeof frame, W, H, sizeof frame[0], (double)i + 0.9375), AVSEG_OK);
    EXPECT(avseg_session_process(s, NULL), AVSEG_OK);
    EXPECT(avseg_session_finish(s, &n), AVSEG_OK);
    EXPECT(avseg_session_latest(s, &info), AVSEG_OK);
    TRUTH(info.width == W && info.height == H);
    TRUTH(info.foreground_fraction >= 0.0 && info.foreground_fraction <= 1.0);
    /* Versioned output: a struct_size below the ABI 3 fields is refused, the struct left alone. */
    timing.struct_size = 8;
    EXPECT(avseg_session_latest_timing(s, &timing), AVSEG_ERR_INVALID_ARGUMENT);
    TRUTH(timing.struct_size == 8 && timing.sequence == 0);
    timing.struct_size = (uint32_t)sizeof timing;
    EXPECT(avseg_session_latest_timing(s, &timing), AVSEG_OK);
    /* The newest frame (4) of window 0: its own patch is the 0.975 s from 4 x 0.96 s. */
    TRUTH(timing.sequence == 4 && fabs(timing.patch_end - (4 * 0.96 + 0.975)) < 1e-9);

    /* Output buffers: size queries, too small, exact. */
    needed = 0;
    EXPECT(avseg_session_latest_mask(s, NULL, 0, &needed), AVSEG_ERR_BUFFER_TOO_SMALL);
    TRUTH(needed == (size_t)W * H);
    needed = 0;
    EXPECT(avseg_session_latest_mask(s, mask, 10, &needed), AVSEG_ERR_BUFFER_TOO_SMALL);
    TRUTH(needed == (size_t)W * H);
    EXPECT(avseg_session_latest_mask(s, mask, 10, NULL), AVSEG_ERR_BUFFER_TOO_SMALL);
    EXPECT(avseg_session_latest_mask(s, mask, sizeof mask, NULL), AVSEG_OK);
    EXPECT(avseg_session_latest_confidence(s, conf, W * H - 1, &needed), AVSEG_ERR_BUFFER_TOO_SMALL);
    EXPECT(avseg_session_latest_confidence(s, conf, W * H, &needed), AVSEG_OK);
    TRUTH(conf[0] >= 0.0f && conf[0] <= 1.0f);
    count = 12345;
    EXPECT(avseg_session_latest_objects(s, 60.0f, NULL, 0, &count),
           info.object_count == 0 ? AVSEG_OK : AVSEG_ERR_BUFFER_TOO_SMALL);
    TRUTH(count == info.object_count);
    EXPECT(avseg_session_latest_objects(s, 60.0f, objs, 256, &count), AVSEG_OK);
    TRUTH(count == info.object_count);

    /* Popping every result in order; a too-small buffer keeps the result first in line. */
    EXPECT(avseg_session_pop_result(s, 60.0f, NULL, mask, sizeof mask, objs, 256), AVSEG_ERR_NULL);
    EXPECT(avseg_session_pop_result(s, 60.0f, &info, NULL, 5, objs, 256), AVSEG_ERR_NULL);
    EXPECT(avseg_session_pop_result(s, -1.0f, &info, mask, sizeof mask, objs, 256), AVSEG_ERR_INVALID_ARGUMENT);
    EXPECT(avseg_session_pop_result(s, 60.0f, &info, mask, 10, objs, 256), AVSEG_ERR_BUFFER_TOO_SMALL);
    TRUTH(info.sequence == 0 && info.width == W && info.height == H);
    EXPECT(avseg_session_pop_result(s, 60.0f, &info, mask, sizeof mask, objs, 256), AVSEG_OK);
    TRUTH(info.sequence == 0 && info.object_count <= 256);
    EXPECT(avseg_session_popped_timing(s, &timing), AVSEG_OK);
    TRUTH(timing.sequence == 0 && fabs(timing.patch_end - 0.975) < 1e-9 && timing.frame_timestamp == 0.9375);
    for (i = 1; i < 5; i++) {
        EXPECT(avseg_session_pop_result(s, 60.0f, &info, NULL, 0, NULL, 0), AVSEG_OK);
        TRUTH(info.sequence == i);
    }
    EXPECT(avseg_session_pop_result(s, 60.0f, &info, mask, sizeof mask, objs, 256), AVSEG_ERR_NO_RESULT);
    EXPECT(avseg_session_stats(s, &stats), AVSEG_OK);
    TRUTH(stats.results == 5 && stats.frames_used == 5);
    /* The stream is over: more input is refused as input, not as a crash. */
    EXPECT(avseg_session_push_audio_f32(s, audio, 100, RATE, 1, 7.0), AVSEG_ERR_INPUT);

    /* Freed and forged handles. */
    EXPECT(avseg_session_free(forged), AVSEG_ERR_INVALID_HANDLE);
    EXPECT(avseg_session_process(forged, &n), AVSEG_ERR_INVALID_HANDLE);
    EXPECT(avseg_session_free(s), AVSEG_OK);
    EXPECT(avseg_session_free(s), AVSEG_ERR_INVALID_HANDLE);
    EXPECT(avseg_session_process(s, &n), AVSEG_ERR_INVALID_HANDLE);
    EXPECT(avseg_session_push_audio_f32(s, audio, 100, RATE, 1, 0.0), AVSEG_ERR_INVALID_HANDLE);
    EXPECT(avseg_session_latest(s, &info), AVSEG_ERR_INVALID_HANDLE);
    EXPECT(avseg_session_latest_mask(s, mask, sizeof mask, &needed), AVSEG_ERR_INVALID_HANDLE);
    EXPECT(avseg_session_stats(s, &stats), AVSEG_ERR_INVALID_HANDLE);
    EXPECT(avseg_session_free(missing), AVSEG_OK);

    printf("hostile: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
