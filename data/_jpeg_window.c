/* Decoding one window of a JPEG, as TensorFlow's decode_and_crop_jpeg does: libjpeg-turbo skips the rows above
 * the window without its IDCT (jpeg_skip_scanlines), stops at the window's last row, and runs the IDCT and colour
 * conversion only on the iMCU columns that cover it (jpeg_crop_scanline). For an Inception crop this takes about
 * two thirds of a whole-image decode.
 *
 * Hand-written because no Python JPEG library exposes these two calls (OpenCV, Pillow, simplejpeg, imagecodecs
 * and PyTurboJPEG decode whole images; PyTurboJPEG's crop is a lossless transcode to another JPEG). The settings
 * are TensorFlow's defaults: the fast integer DCT and fancy upsampling, so the pixels equal
 * tf.io.decode_and_crop_jpeg's. A truncated JPEG is an error, other libjpeg warnings are not, also as TensorFlow.
 *
 * decode(data, out, top, left, height, width, channels, divisor) -> x_shift, or None
 *   data: the JPEG bytes; out: a writable C-contiguous uint8 buffer of height x (width + MAX_SHIFT) x channels.
 *   The window (top, left, height, width) is in the pixels of the image decoded at 1/divisor scale (1, 2, 4, 8).
 *   Row r of the window is written to out's row r from column 0; the window starts at column x_shift of it.
 *   None: a CMYK or YCCK JPEG, which libjpeg cannot convert to RGB or grey (the caller decodes it otherwise).
 *   DecodeError (a ValueError): the data does not decode. ValueError: bad arguments, or the window is not inside
 *   the image (the caller's mistake, never the data's).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include <jerror.h>
#include <jpeglib.h>

/* jpeg_crop_scanline moves the window's left edge back to an iMCU boundary: at most one iMCU, 32 pixels (4:1:1
 * chroma subsampling at full scale). */
#define MAX_SHIFT 32
/* The largest height or width a JPEG can have. */
#define MAX_SIDE 65535

static PyObject *DecodeError;

enum Status { DECODED, UNSUPPORTED_COLOURS, WINDOW_OUTSIDE, FAILED };

typedef struct {
  struct jpeg_error_mgr base;
  jmp_buf escape;
} ErrorManager;

static void on_error(j_common_ptr cinfo) { longjmp(((ErrorManager *)cinfo->err)->escape, 1); }

static void on_message(j_common_ptr cinfo, int level) {
  /* level -1 is a warning: only running out of data stops the decode. */
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) longjmp(((ErrorManager *)cinfo->err)->escape, 1);
}

typedef struct {
  const unsigned char *data;
  unsigned long size;
  unsigned char *out;
  int top, left, height, width, channels, divisor;
  int x_shift;           /* out */
  int image_height, image_width;  /* out: at 1/divisor scale, for WINDOW_OUTSIDE */
  char message[JMSG_LENGTH_MAX];  /* out: for FAILED */
} Request;

/* Runs without the GIL: touches no Python object. */
static enum Status decode_window(Request *request) {
  struct jpeg_decompress_struct cinfo;
  ErrorManager errors;
  JSAMPROW *volatile rows = NULL;

  cinfo.err = jpeg_std_error(&errors.base);
  errors.base.error_exit = on_error;
  errors.base.emit_message = on_message;
  if (setjmp(errors.escape)) {
    (*cinfo.err->format_message)((j_common_ptr)&cinfo, request->message);
    free(rows);
    jpeg_destroy_decompress(&cinfo);
    return FAILED;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, request->data, request->size);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&cinfo);
    return UNSUPPORTED_COLOURS;
  }
  cinfo.out_color_space = request->channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  cinfo.dct_method = JDCT_IFAST;
  cinfo.do_fancy_upsampling = TRUE;
  cinfo.scale_num = 1;
  cinfo.scale_denom = (unsigned int)request->divisor;
  jpeg_calc_output_dimensions(&cinfo);  /* checked before jpeg_start_decompress, which reads a progressive JPEG */
  request->image_height = (int)cinfo.output_height;
  request->image_width = (int)cinfo.output_width;
  if ((long long)request->top + request->height > (long long)cinfo.output_height ||
      (long long)request->left + request->width > (long long)cinfo.output_width) {
    jpeg_destroy_decompress(&cinfo);
    return WINDOW_OUTSIDE;
  }
  jpeg_start_decompress(&cinfo);
  JDIMENSION x = (JDIMENSION)request->left, columns = (JDIMENSION)request->width;
  jpeg_crop_scanline(&cinfo, &x, &columns);
  request->x_shift = request->left - (int)x;
  if (request->x_shift > MAX_SHIFT || columns > (JDIMENSION)(request->width + MAX_SHIFT)) {
    jpeg_destroy_decompress(&cinfo);
    snprintf(request->message, sizeof(request->message), "an iMCU wider than %d pixels", MAX_SHIFT);
    return FAILED;
  }
  if (request->top > 0 && jpeg_skip_scanlines(&cinfo, (JDIMENSION)request->top) != (JDIMENSION)request->top) {
    jpeg_destroy_decompress(&cinfo);
    snprintf(request->message, sizeof(request->message), "could not skip to row %d", request->top);
    return FAILED;
  }
  rows = malloc(sizeof(JSAMPROW) * (size_t)request->height);
  if (rows == NULL) {
    jpeg_destroy_decompress(&cinfo);
    snprintf(request->message, sizeof(request->message), "out of memory");
    return FAILED;
  }
  const size_t stride = (size_t)(request->width + MAX_SHIFT) * (size_t)request->channels;
  for (int r = 0; r < request->height; r++) rows[r] = request->out + (size_t)r * stride;
  JDIMENSION done = 0;
  while (done < (JDIMENSION)request->height) {
    JDIMENSION read = jpeg_read_scanlines(&cinfo, rows + done, (JDIMENSION)request->height - done);
    if (read == 0) break;  /* a suspending source; jpeg_mem_src never suspends */
    done += read;
  }
  enum Status status = DECODED;
  if (done < (JDIMENSION)request->height) {
    snprintf(request->message, sizeof(request->message), "only %u of %d rows decoded", done, request->height);
    status = FAILED;
  }
  free(rows);
  rows = NULL;
  jpeg_abort_decompress(&cinfo);  /* the rows below the window are never decoded */
  jpeg_destroy_decompress(&cinfo);
  return status;
}

static PyObject *decode(PyObject *self, PyObject *args) {
  Py_buffer data, out;
  Request request;
  (void)self;
  if (!PyArg_ParseTuple(args, "y*w*iiiiii", &data, &out, &request.top, &request.left, &request.height,
                        &request.width, &request.channels, &request.divisor)) {
    return NULL;
  }
  const char *invalid = NULL;
  if (request.channels != 1 && request.channels != 3) invalid = "channels must be 1 or 3";
  else if (request.divisor != 1 && request.divisor != 2 && request.divisor != 4 && request.divisor != 8)
    invalid = "divisor must be 1, 2, 4 or 8";
  else if (request.top < 0 || request.left < 0 || request.height < 1 || request.width < 1 ||
           request.top > MAX_SIDE || request.left > MAX_SIDE || request.height > MAX_SIDE ||
           request.width > MAX_SIDE)
    invalid = "the window must have a non-negative origin and a positive size, all at most 65535";
  else if (out.len < (Py_ssize_t)request.height * (request.width + MAX_SHIFT) * request.channels)
    invalid = "out must be a buffer of height x (width + MAX_SHIFT) x channels bytes";
  if (invalid != NULL) {
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    PyErr_SetString(PyExc_ValueError, invalid);
    return NULL;
  }
  request.data = data.buf;
  request.size = (unsigned long)data.len;
  request.out = out.buf;
  request.message[0] = '\0';
  enum Status status;
  Py_BEGIN_ALLOW_THREADS
  status = decode_window(&request);
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&data);
  PyBuffer_Release(&out);
  switch (status) {
    case DECODED:
      return PyLong_FromLong(request.x_shift);
    case UNSUPPORTED_COLOURS:
      Py_RETURN_NONE;
    case WINDOW_OUTSIDE:
      return PyErr_Format(PyExc_ValueError, "window (%d, %d, %d, %d) outside the %d x %d image at 1/%d scale",
                          request.top, request.left, request.height, request.width, request.image_height,
                          request.image_width, request.divisor);
    default:
      return PyErr_Format(DecodeError, "%s", request.message);
  }
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(data, out, top, left, height, width, channels, divisor) -> x_shift or None: one window of a JPEG "
     "(see the module source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_jpeg_window",
    .m_doc = "One window of a JPEG, decoded as tf.io.decode_and_crop_jpeg.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__jpeg_window(void) {
  PyObject *m = PyModule_Create(&module);
  if (m == NULL) return NULL;
  DecodeError = PyErr_NewExceptionWithDoc("_jpeg_window.DecodeError", "JPEG data that libjpeg cannot decode.",
                                          PyExc_ValueError, NULL);
  if (DecodeError == NULL || PyModule_AddObjectRef(m, "DecodeError", DecodeError) < 0 ||
      PyModule_AddIntConstant(m, "MAX_SHIFT", MAX_SHIFT) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
