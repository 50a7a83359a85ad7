# heyvm: tell the host the guest is ready. Only the console shells print it;
# they start after init's sysinit finished, so sshd is already listening.
case "$(tty 2>/dev/null)" in
/dev/hvc0 | /dev/ttyS0)
	stty -echo 2>/dev/null
	echo "HEYVM-READY $(cut -d' ' -f1 /proc/uptime)"
	stty echo 2>/dev/null
	;;
esac
