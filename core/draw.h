/* Drawing on 8-bit RGB pictures for the PNGs the library writes (explanations, metrics): rectangles, lines and
 * text in a 5x7 font (printable ASCII; the lower case letters it lacks are drawn as upper case). Everything is clipped to the picture. */
#ifndef CNN_CORE_DRAW_H
#define CNN_CORE_DRAW_H

/* The advance of one character at scale 1, in pixels; a line of text is 7 x scale pixels high. */
#define CNN_DRAW_GLYPH_W 6

void cnn_draw_rect(unsigned char *px, int w, int h, int x, int y, int rw, int rh, const unsigned char rgb[3]);
void cnn_draw_line(unsigned char *px, int w, int h, int x0, int y0, int x1, int y1, const unsigned char rgb[3]);
/* Text with its top-left corner at (x, y), each font pixel `scale` pixels wide; returns its width. */
int cnn_draw_text(unsigned char *px, int w, int h, int x, int y, const char *s, int scale, const unsigned char rgb[3]);
int cnn_draw_text_width(const char *s, int scale);

#endif
