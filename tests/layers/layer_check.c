/* layer_check.c — the empty program each layer library is linked into, with
 * only the layers below it; see meson.build here. Linking is the check. */
int main(void)
{
	return 0;
}
